import ArgumentParser
import Collectives
import Foundation
import Logging
import Transport

/// `peernode bench state-sync`: how fast a joiner downloads a shared state from N donors on
/// loopback (in one process: donors and joiner on their own threads and sockets).
struct StateSyncBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "state-sync", abstract: "Time a shared-state download from N donors on 127.0.0.1.")

    @Option(parsing: .upToNextOption, help: "Donor counts to measure.") var donors: [Int] = [1, 3]
    @Option(name: .customLong("size-mib"), help: "State size in MiB of f32.") var sizeMiB = 256
    @Option(help: "Downloads per donor count.") var reps = 3
    @Option(help: "Allow zstd on the wire (the state is random f32: it barely compresses).") var zstd = false

    func validate() throws {
        guard donors.allSatisfy({ (1...16).contains($0) }), (1...4096).contains(sizeMiB), reps >= 1 else {
            throw ValidationError("--donors 1...16, --size-mib 1...4096, --reps ≥ 1")
        }
    }

    func run() async throws {
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        let key = try ClusterKey(bytes: (0..<32).map { _ in UInt8.random(in: 0...255) })
        let spec = [TensorSpec(name: "theta", dtype: .f32, shape: [sizeMiB << 18])]
        let source = try SharedState(specs: spec, revision: 1)
        var rng = SystemRandomNumberGenerator()
        let theta = source.floats("theta")!
        for i in 0..<theta.count { theta[i] = Float.random(in: -1...1, using: &rng) }
        let digest = source.digest()
        let target = try SharedState(specs: spec)
        for n in donors {
            var peers: [Communicator] = []
            var endpoints: [PeerEndpoint] = []
            for i in 0..<n {
                let peer = Communicator(localId: UInt64(100 + i), key: key, logger: logger)
                let port = try await peer.listen(host: "127.0.0.1", port: 0)
                peer.serveState(StateServer(state: source, logger: logger))
                peers.append(peer)
                endpoints.append(PeerEndpoint(id: UInt64(100 + i), host: "127.0.0.1", port: port))
            }
            var downloader = StateDownloader(localId: 1, key: key, logger: logger)
            downloader.allowZstd = zstd
            var times: [Double] = []
            for _ in 0..<reps {
                let report = try await downloader.download(into: target, revision: 1, digest: digest, donors: endpoints)
                times.append(report.seconds)
            }
            for p in peers { await p.shutdown() }
            times.sort()
            let median = times[times.count / 2]
            let bytes = Double(source.encodedSize)
            print("impl=peernode-state-sync donors=\(n) size_mib=\(sizeMiB) reps=\(reps) median_ms=\(fmt(median * 1000)) "
                  + "min_ms=\(fmt(times.first! * 1000)) max_ms=\(fmt(times.last! * 1000)) GBps=\(fmt(bytes / median / 1e9)) "
                  + "digest=\(digest.short) verified=yes")
            fflush(nil)
        }
    }
}
