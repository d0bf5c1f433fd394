import ArgumentParser

extension PeerNodeCommand {
    /// `peernode demo`: what a newcomer runs first.
    ///
    /// Today it starts a local cluster of real peernode processes on loopback and runs the
    /// collective layer end to end: exact and int8 all-reduces, timed, with every peer's result
    /// digest compared. Training with DiLoCo joins it when the daemon lands (docs/README).
    struct Demo: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "demo",
            abstract: "Run a local peernode cluster on loopback and show what it does.")

        @Option(help: "Number of peer processes.") var peers = 3

        func validate() throws {
            guard (2...8).contains(peers) else { throw ValidationError("--peers must be 2...8") }
        }

        func run() async throws {
            print("peernode demo: \(peers) peer processes on 127.0.0.1, ring all-reduce of f32 buffers")
            print("  exact (fp32 on the wire), then int8 (min-max blocks of 256): every peer must end with the same digest\n")
            for quant in ["none", "int8"] {
                var bench = try AllReduceBench.parse(["--peers", "\(peers)", "--size-mib", "4", "16", "64", "--reps", "5",
                                                      "--quant", quant])
                try await bench.run()
            }
            print("\nparity=equal on every line: all peers hold bit-identical results.")
        }
    }
}
