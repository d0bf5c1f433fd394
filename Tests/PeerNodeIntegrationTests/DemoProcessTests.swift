import Foundation
import Testing

/// The README's main job, small: real processes train with DiLoCo and end bit-identical.
@Test func demoTrainsAndEndsWithEqualDigests() throws {
    let result = try runPeernode(["demo", "--peers", "3", "--outer-steps", "3", "--inner-steps", "5"], timeout: 240)
    #expect(result.status == 0, "\(result.stderr)")
    let steps = result.stdout.split(separator: "\n").filter { $0.hasPrefix("outer ") }
    #expect(steps.count == 3)
    #expect(steps.allSatisfy { $0.contains("(all equal)") }, "\(result.stdout)")
    #expect(result.stdout.contains("all equal: bit-identical"))
}

@Test func demoRejectsBadArguments() throws {
    for args in [["--peers", "0"], ["--model", "resnet"], ["--model", "moe", "--data", "esol"], ["--quant", "fp4"]] {
        let result = try runPeernode(["demo"] + args)
        #expect(result.status != 0, "\(args)")
        #expect(result.stderr.contains("Error"), "\(args): \(result.stderr)")
    }
}
