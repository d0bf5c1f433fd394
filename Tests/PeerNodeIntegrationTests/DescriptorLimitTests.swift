import Foundation
import Testing
import Transport

/// A data port that runs out of file descriptors (EMFILE) for a few seconds accepts and
/// authenticates connections again once descriptors are back, and says why it could not in
/// between, once rather than once per failed accept. The limit is lowered in a child process
/// (`peernode descriptor-limit-worker`): in the test runner it would starve every other test.
@Test func theDataPortAcceptsAgainAfterRunningOutOfDescriptors() throws {
    let worker = try Daemon(["--squeeze-seconds", "3"], command: "descriptor-limit-worker")
    defer {
        worker.process.terminate()
        worker.process.waitUntilExit()
    }
    let portLine = try #require(worker.waitFor("port ", timeout: 60), "no port line; stderr: \(worker.stderrTail)")
    let port = try #require(Int(portLine.split(separator: " ")[1]))
    try #require(worker.waitFor("squeezed", timeout: 60) != nil, "never squeezed; stderr: \(worker.stderrTail)")
    let key = try ClusterKey(string: "integration-test-cluster-key-0123456789")

    // Dialed while the worker has no descriptor to spare. Linux reserves the descriptor when
    // `accept` starts waiting, so an accept already waiting may still take this one; the next
    // fails with EMFILE at once, and so does every accept until the limit is back.
    try dial(port, id: 0xa1, key: key, worker: worker)
    try #require(worker.waitFor("released", timeout: 60) != nil, "never released; stderr: \(worker.stderrTail)")
    // After the limit is lifted: the accept loop must still be there.
    try dial(port, id: 0xa2, key: key, worker: worker)
    #expect(worker.waitFor("authenticated a1", timeout: 30) != nil)
    #expect(worker.waitFor("authenticated a2", timeout: 30) != nil)

    // Several accepts failed while squeezed (the first at once, then after each backoff); less
    // than the log interval (5 s) passed, so one line said so, and one that accepting works again.
    let log = worker.stderrTail
    #expect(log.components(separatedBy: "data port cannot accept").count - 1 == 1, "\(log)")
    #expect(log.contains("Too many open files"), "\(log)")
    #expect(log.contains("data port accepting again"), "\(log)")
}

/// Dials and authenticates a connection to `worker`'s data port, and hangs up; a failure says
/// what the worker logged.
private func dial(_ port: Int, id: UInt64, key: ClusterKey, worker: Daemon) throws {
    do {
        let (socket, _) = try BlockingSocket.dial(host: "127.0.0.1", port: port, localId: id, key: key,
                                                  purpose: .stateTransfer, info: [], timeout: 30)
        socket.close()
    } catch {
        Issue.record("dial \(String(id, radix: 16)) failed: \(error); the worker logged: \(worker.stderrTail)")
        throw error
    }
}
