import Foundation
import Testing

/// The README's main job, small: real `peernode run` processes train with DiLoCo, one leaves
/// and a new one joins mid-run, and every step ends bit-identical on every peer.
@Test(arguments: ["sync", "async"])
func demoTrainsThroughALeaveAndAJoinWithEqualDigests(mode: String) throws {
    // Enough steps after the join point (step 5) for the joiner to start, load its data and be
    // admitted: with 6 short steps the others could finish first (the debug build starts slowly),
    // and the joiner then saw its coordinator leave before admitting it.
    let result = try runPeernode(["demo", "--peers", "3", "--outer-steps", "10", "--inner-steps", "10", "--mode", mode], timeout: 240)
    #expect(result.status == 0, "\(result.stderr)\n\(result.stdout)")
    let steps = result.stdout.split(separator: "\n").filter { $0.hasPrefix("outer ") }
    #expect(steps.count == 10, "\(result.stdout)")
    #expect(steps.allSatisfy { $0.contains(" equal)") }, "\(result.stdout)")
    // Peer 2 left after step 2: some step ran on two peers; the joiner (peer 3) took part later.
    #expect(steps.contains { $0.contains("peers 2 ") }, "\(result.stdout)")
    #expect(steps.last?.contains("peers 3 ") == true, "\(result.stdout)")
    #expect(result.stdout.contains("peer 3: outer steps"), "\(result.stdout)")
    #expect(result.stdout.contains("all equal at every step"), "\(result.stdout)")
}

@Test func demoRejectsBadArguments() throws {
    for args in [["--peers", "0"], ["--model", "resnet"], ["--model", "moe", "--data", "esol"], ["--quant", "fp4"]] {
        let result = try runPeernode(["demo"] + args)
        #expect(result.status != 0, "\(args)")
        #expect(result.stderr.contains("Error"), "\(args): \(result.stderr)")
    }
}
