import ArgumentParser

/// The `peernode` executable: one binary for every role (see docs/operations.md).
@main
struct PeerNodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peernode",
        abstract: "A decentralized, fault-tolerant training cluster over plain TCP.",
        subcommands: [Bench.self])
}
