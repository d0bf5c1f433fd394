import ArgumentParser

extension PeerNodeCommand {
    /// `peernode bench ...`: benchmarks a user can run on their own machines.
    struct Bench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "bench",
            abstract: "Measure peernode on this machine.",
            subcommands: [AllReduceBench.self, StateSyncBench.self, DiLoCoBench.self, LineMergeBench.self, RingOrderBench.self,
                          AllReduceWorker.self, RingOrderWorker.self])
    }
}
