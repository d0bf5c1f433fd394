import Foundation
import Testing

/// `peernode bench line-merge` end to end with tiny settings: a split, two sides apart, the
/// merge and a run never split, in one process (the figures themselves come from the command in
/// docs/benchmarks.md, never from a test).
@Test func lineMergeBenchRunsEndToEnd() throws {
    let result = try runPeernode(["bench", "line-merge", "--peers", "4", "--steps-before", "2", "--steps-apart", "2",
                                  "--inner-steps", "2", "--repeats", "2", "--after", "1"], timeout: 90)
    #expect(result.status == 0, "\(result.stderr)")
    let lines = result.stdout.split(separator: "\n").filter { $0.hasPrefix("line_merge ") }
    #expect(lines.count == 2, "\(result.stdout)")
    for line in lines {
        // Each side trained 2 peers × 2 steps apart from 4 peers × 2 steps together.
        #expect(line.contains("merge_base=8 weights=4:4"), "\(line)")
        #expect(line.contains("fork_state=equal"), "\(line)")
        for key in ["side_a=", "side_b=", "merged=", "never_split=", "merged_after_1=", "never_split_after_1="] {
            #expect(line.contains(" \(key)"), "\(key) missing: \(line)")
        }
        #expect(!line.contains("nan"), "\(line)")
    }
    #expect(result.stdout.contains("summary merged min="), "\(result.stdout)")
}

@Test func lineMergeBenchRejectsBadArguments() throws {
    for args in [["--peers", "1"], ["--side-a", "4"], ["--side-a", "0"], ["--steps-apart", "0"], ["--model", "moe", "--data", "esol"]] {
        let result = try runPeernode(["bench", "line-merge"] + args)
        #expect(result.status != 0, "\(args)")
        #expect(result.stderr.contains("Error"), "\(args): \(result.stderr)")
    }
}
