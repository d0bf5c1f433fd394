import Collectives
import Foundation
import Logging
import Transport

/// `size` communicators in this process on 127.0.0.1 (ports chosen by the OS) joined in one ring:
/// real sockets and the real ring, without processes (for in-process benchmarks; the tests'
/// `withCluster` does the same).
struct LoopbackRing {
    let communicators: [Communicator]

    /// `firstId`: the members' ids are `firstId ..< firstId + size` (distinct per ring of a run,
    /// which helps reading logs).
    static func make(size: Int, firstId: UInt64, key: ClusterKey, logger: Logger) async throws -> LoopbackRing {
        let peers = (0..<size).map { i in Communicator(localId: firstId + UInt64(i), key: key, logger: logger) }
        do {
            var members: [PeerEndpoint] = []
            for peer in peers {
                let port = try await peer.listen(host: "127.0.0.1", port: 0)
                members.append(PeerEndpoint(id: peer.localId, host: "127.0.0.1", port: port))
            }
            let view = RingView(epoch: 1, members: members)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for peer in peers { group.addTask { try await peer.connect(view: view) } }
                try await group.waitForAll()
            }
        } catch {
            for peer in peers { await peer.shutdown() }
            throw error
        }
        return LoopbackRing(communicators: peers)
    }

    func shutdown() async {
        for peer in communicators { await peer.shutdown() }
    }

    /// A key for rings that only ever talk to themselves in this process.
    static func randomKey() throws -> ClusterKey {
        var generator = SystemRandomNumberGenerator()
        return try ClusterKey(bytes: (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }
}
