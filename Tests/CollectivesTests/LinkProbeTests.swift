import Collectives
import Foundation
import Logging
import PeerTestSupport
import Testing
import Transport

// The link probe (docs/protocol.md §5) on loopback: it measures, within its bounds, and the
// receiving peer's ring keeps working beside it.

@Suite struct LinkProbeTests {
    @Test func aProbeMeasuresWithinItsBounds() async throws {
        let a = Communicator(localId: 1, key: testKey, logger: Logger(label: "probe-a"))
        let b = Communicator(localId: 2, key: testKey, logger: Logger(label: "probe-b"))
        _ = try await a.listen(host: "127.0.0.1", port: 0)
        let portB = try await b.listen(host: "127.0.0.1", port: 0)
        var options = LinkProbeOptions()
        options.maxBytes = 2 << 20
        let probeOptions = options
        let link = try await Task.detached {
            try a.probeLink(to: PeerEndpoint(id: 2, host: "127.0.0.1", port: portB), options: probeOptions)
        }.value
        #expect(link.bytes > 0 && link.bytes <= (2 << 20) + options.frameBytes)
        #expect(link.bandwidth > 0)
        #expect(link.latency >= 0 && link.latency < 1)
        await a.shutdown()
        await b.shutdown()
    }

    @Test func aProbeOfAPeerThatIsNotThereFails() async throws {
        let a = Communicator(localId: 1, key: testKey, logger: Logger(label: "probe-a"))
        let b = Communicator(localId: 2, key: testKey, logger: Logger(label: "probe-b"))
        let portB = try await b.listen(host: "127.0.0.1", port: 0)
        await b.shutdown()
        await #expect(throws: (any Error).self) {
            try await Task.detached {
                try a.probeLink(to: PeerEndpoint(id: 2, host: "127.0.0.1", port: portB))
            }.value
        }
        await a.shutdown()
    }
}
