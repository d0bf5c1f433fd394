import Foundation
import Testing

/// Real `peernode` processes on 127.0.0.1: the all-reduce benchmark doubles as a multi-process
/// parity check (each worker reports the SHA-256 of its result; the driver compares them and
/// checks the values).
@Test(arguments: [("none", 1), ("int8", 1), ("int8-zp", 1), ("int8", 3)])
func realProcessesEndWithEqualDigests(quant: String, streams: Int) throws {
    // Three streams also with a send-rate cap on each (2 Gbit/s: a few ms here).
    let cap = streams > 1 ? ["--stream-rate-mbps", "2000"] : []
    // 64 KiB segments: several frames per step, so that three streams all carry data.
    let result = try runPeernode(["bench", "allreduce", "--peers", "3", "--size-mib", "0.5", "2",
                                  "--reps", "2", "--quant", quant, "--streams", "\(streams)", "--segment-kib", "64",
                                  "--timeout", "90"] + cap)
    #expect(result.status == 0, "\(result.stderr)")
    let lines = result.stdout.split(separator: "\n").filter { $0.hasPrefix("impl=") }
    #expect(lines.count == 2)
    for line in lines {
        #expect(line.contains("parity=equal"), "\(line)")
        #expect(!line.contains("CHECK=FAIL"), "\(line)")
    }
}

@Test func benchRejectsBadArguments() throws {
    for args in [["--peers", "0"], ["--quant", "int4"], ["--size-mib", "-1"], ["--reps", "0"], ["--streams", "0"], ["--streams", "17"],
                 ["--stream-rate-mbps", "-1"]] {
        let result = try runPeernode(["bench", "allreduce"] + args)
        #expect(result.status != 0, "\(args)")
        #expect(result.stderr.contains("Error"), "\(args): \(result.stderr)")
    }
}

@Test func workerWithoutAClusterKeySaysSo() throws {
    var env = ProcessInfo.processInfo.environment
    env["PEERNODE_CLUSTER_KEY"] = nil
    let result = try runPeernode(["bench", "allreduce-worker", "--rank", "0", "--peers", "2", "--size-mib", "1",
                                  "--reps", "1", "--quant", "none", "--segment-kib", "64", "--streams", "1"],
                                 environment: ["PEERNODE_CLUSTER_KEY": ""])
    #expect(result.status != 0)
    #expect(result.stderr.contains("cluster key"), "\(result.stderr)")
}
