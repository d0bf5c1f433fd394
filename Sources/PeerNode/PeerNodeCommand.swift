import ArgumentParser
import Transport

/// The `peernode` executable: one binary for every role (see docs/operations.md). Its entry
/// point is ``PeerNodeMain`` (a fuzzing build has another one: Fuzz/FuzzTargets.swift).
struct PeerNodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peernode",
        abstract: "A decentralized, fault-tolerant training cluster over plain TCP.",
        subcommands: [Demo.self, RunCommand.self, CoordinatorCommand.self, StatusCommand.self, TrainCommand.self, ExportCommand.self,
                      Bench.self, DemoWorker.self, DescriptorLimitWorker.self])

    static func main() async {
        tuneAllocatorForBulkTransfers()
        // Before any thread can touch libcrypto: no atexit cleanup racing exiting threads.
        CryptoLibrary.ensureInitialized()
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}
