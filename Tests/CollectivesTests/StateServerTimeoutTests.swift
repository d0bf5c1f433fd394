@testable import Collectives
import Foundation
import Logging
import PeerTestSupport
import Testing
import Transport

/// A joiner that asks for the whole state and then stops reading (frozen with SIGSTOP): the
/// donor's sends fill the socket buffers and block. The serving thread must give up after the
/// server's peer timeout and release its descriptor, not wait for the joiner for ever.
@Test func aJoinerThatStopsReadingReleasesTheDonorsServingThread() async throws {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    let n = 8 << 20  // 32 MiB of θ: far more than the socket buffers hold
    let state = try SharedState(specs: [TensorSpec(name: "theta", dtype: .f32, shape: [n])], revision: 3)
    var rng = SplitMix64(seed: 5)
    let theta = state.floats("theta")!
    for i in 0..<n { theta[i] = Float(rng.next() >> 40) }  // incompressible enough
    let donor = Communicator(localId: 0xD0, key: testKey, logger: logger)
    let port = try await donor.listen(host: "127.0.0.1", port: 0)
    let server = StateServer(state: state, peerTimeout: 1, logger: logger)
    donor.serveState(server)
    let (socket, _) = try BlockingSocket.dial(host: "127.0.0.1", port: port, localId: 0xD1, key: testKey,
                                              purpose: .stateTransfer, info: [], timeout: 5)
    let chunk = UInt32(1 << 20)
    let request = StateRequest(revision: 3, digest: state.digest().bytes, chunkSize: chunk, first: 0,
                               count: UInt32((n * 4) / Int(chunk)), allowZstd: false, digestsOnly: false)
    try socket.sendFrame(.stateRequest, bytes: request.bytes)
    // The joiner reads nothing from here on.
    let deadline = ContinuousClock.now + .seconds(20)
    while server.activeTransfers == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
    #expect(server.activeTransfers == 1, "the donor never started serving")
    while server.activeTransfers > 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
    #expect(server.activeTransfers == 0, "the serving thread still waits for a joiner that stopped reading")
    socket.close()
    await donor.shutdown()
}
