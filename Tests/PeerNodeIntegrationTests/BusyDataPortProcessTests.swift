import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Keeps up to `count` silent connections open to 127.0.0.1:`port` (each reopened as soon as the
/// server closes it) until `stop` is set: a stranger holding a data port's handshake slots.
private final class SlotHolder: @unchecked Sendable {
    private let lock = NSLock()
    private var stopped = false
    private var thread: Thread?
    private(set) var opened = 0

    init(port: Int, count: Int) {
        let thread = Thread { [self] in
            var fds: [Int32] = []
            while !lock.withLock({ stopped }) {
                // Drop the ones the server closed (at accept, or at its handshake deadline).
                fds = fds.filter { fd in
                    var entry = pollfd(fd: fd, events: Int16(0x2000 /* POLLRDHUP */), revents: 0)
                    let closed = poll(&entry, 1, 0) > 0 && entry.revents & (Int16(0x2000) | Int16(POLLHUP) | Int16(POLLERR)) != 0
                    if closed { close(fd) }
                    return !closed
                }
                while fds.count < count {
                    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                    var address = sockaddr_in()
                    address.sin_family = sa_family_t(AF_INET)
                    address.sin_port = in_port_t(UInt16(port).bigEndian)
                    address.sin_addr.s_addr = inet_addr("127.0.0.1")
                    let rc = withUnsafePointer(to: &address) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                    }
                    guard rc == 0 else { close(fd); break }
                    fds.append(fd)
                    lock.withLock { opened += 1 }
                }
                usleep(20_000)
            }
            for fd in fds { close(fd) }
        }
        self.thread = thread
        thread.start()
    }

    func stop() { lock.withLock { stopped = true } }
}

/// Issue 12: with a member's data port held by strangers, the ring of a new view cannot form
/// (the joiner's dials are refused at accept; the member waits for a left link that never
/// comes). Neither process exits: each tries again at the next update point, and once the
/// strangers go they train together.
@Test func membersThatCannotFormTheirRingDoNotExitAndTrainOnceTheDataPortIsFree() throws {
    let common = ["--min-peers", "2", "--inner-steps", "2", "--shard-count", "2",
                  "--heartbeat-ms", "200", "--heartbeat-timeout-ms", "3000", "--log-level", "warning"]
    let founder = try Daemon(common + ["--shard-index", "0"])
    defer { founder.signal(SIGKILL) }
    let control = try #require(founder.controlPort, "the founder did not start: \(founder.stderrTail)")
    let dataPort = try #require(founder.readyField("data_port").flatMap { Int($0) })
    // More than the per-address cap (32) of silent connections, kept up for the formation timeout (15 s) and more.
    let holder = SlotHolder(port: dataPort, count: 34)
    let joiner = try Daemon(common + ["--shard-index", "1", "--seed", "127.0.0.1:\(control)"])
    defer { joiner.signal(SIGKILL) }
    Thread.sleep(forTimeInterval: 25)
    holder.stop()
    #expect(holder.opened > 34, "the strangers' connections were never closed by the node (\(holder.opened) opened)")
    for daemon in [founder, joiner] {
        #expect(daemon.process.isRunning, "exited while the data port was busy: \(daemon.stderrTail)")
    }
    for daemon in [founder, joiner] {
        #expect(daemon.waitFor("revision=2 ", timeout: 120) != nil, "no training after the data port was free: \(daemon.stderrTail)")
    }
    for daemon in [founder, joiner] { daemon.signal(SIGTERM) }
    for daemon in [founder, joiner] {
        #expect(daemon.finish(timeout: 30) == 0, "no clean end: \(daemon.stderrTail)")
    }
    let formedLate = (founder.stderrText + joiner.stderrText).contains("could not form the ring yet")
    // (A dial may slip into a freed slot before the formation timeout; then no retry was needed.)
    if !formedLate { print("note: the ring formed despite the busy port; the retry path was not needed") }
}
