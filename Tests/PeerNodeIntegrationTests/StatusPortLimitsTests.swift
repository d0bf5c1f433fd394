import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A raw loopback TCP client for hostile requests: nothing HTTP about it.
private final class RawClient {
    let fd: Int32

    init(port: Int, sendBuffer: Int32? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HTTPFailure(description: "socket: \(errno)") }
        if var size = sendBuffer {
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            close(fd)
            throw HTTPFailure(description: "connect: errno \(errno)")
        }
    }

    deinit { close(fd) }

    /// Sends all of `bytes`, waiting at most `timeout` s for room; false if the server closed.
    func send(_ bytes: [UInt8], timeout: Double = 5) -> Bool {
        var done = 0
        let deadline = Date().addingTimeInterval(timeout)
        while done < bytes.count, Date() < deadline {
            var entry = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            guard poll(&entry, 1, 200) >= 0 else { return false }
            if entry.revents & Int16(POLLERR | POLLHUP) != 0 { return false }
            guard entry.revents & Int16(POLLOUT) != 0 else { continue }
            let n = bytes[done...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                return false
            }
            done += n
        }
        return done == bytes.count
    }

    /// Reads until the server closes or `timeout` s pass; returns what came, and whether it closed.
    func readToClose(timeout: Double) -> (data: [UInt8], closed: Bool) {
        var data: [UInt8] = []
        let deadline = Date().addingTimeInterval(timeout)
        var chunk = [UInt8](repeating: 0, count: 65536)
        while Date() < deadline {
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&entry, 1, 100) > 0 else { continue }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n == 0 { return (data, true) }
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                return (data, true)  // reset
            }
            data += chunk[..<n]
        }
        return (data, false)
    }
}

/// A daemon that waits for a second member (so it does nothing but serve) and its status port.
private func idleDaemonWithStatusPort() throws -> (Daemon, Int) {
    let daemon = try Daemon(["--min-peers", "2", "--status-port", "0", "--log-level", "warning"])
    let port = try #require(daemon.readyField("status_port").flatMap { Int($0) }, "no status port: \(daemon.stderrTail)")
    return (daemon, port)
}

/// What a client may cost the status port is bounded (docs/operations.md, "The status port"):
/// any other method than GET is 405 with `Allow: GET` (also one the HTTP parser does not know),
/// a body sent with a GET is not read whole, a request with too many header lines is refused,
/// a request trickled in byte by byte is cut off at the request deadline, and connections beyond
/// the cap are closed at once; the port answers as before afterwards.
@Test func theStatusPortBoundsWhatAClientMayCost() throws {
    let (daemon, port) = try idleDaemonWithStatusPort()
    defer { daemon.signal(SIGKILL) }

    // A method unknown to HTTP parsers, and a known one: both 405, not 400.
    for method in ["FOO", "BREW", "POST"] {
        let answer = try httpRequest(method, port: port, path: "/status")
        #expect(answer.status == 405 && answer.headers["allow"] == "GET", "\(method): \(answer)")
    }

    // A GET with a 16 MiB chunked body: the connection is closed long before all of it is taken.
    do {
        let client = try RawClient(port: port, sendBuffer: 64 << 10)
        #expect(client.send(Array("GET /status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)))
        let chunk = Array("10000\r\n".utf8) + [UInt8](repeating: 0x41, count: 0x10000) + Array("\r\n".utf8)
        var sent = 0
        while sent < 16 << 20, client.send(chunk, timeout: 10) { sent += 0x10000 }
        #expect(sent < 8 << 20, "the server took \(sent) body bytes of a GET")
    }

    // 200 header lines: refused (an error answer or a closed connection), never served.
    do {
        let client = try RawClient(port: port)
        var request = "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        for i in 0..<200 { request += "X-Filler-\(i): \(i)\r\n" }
        _ = client.send(Array((request + "\r\n").utf8))
        let (data, closed) = client.readToClose(timeout: 15)
        let text = String(decoding: data, as: UTF8.self)
        #expect(closed, "the connection stayed open")
        #expect(!text.hasPrefix("HTTP/1.1 200"), "\(text.prefix(200))")
    }

    // Slowloris: one header byte a second. Cut off at the request deadline (10 s), not served
    // for as long as bytes keep coming.
    do {
        let client = try RawClient(port: port)
        #expect(client.send(Array("GET /status HTTP/1.1\r\n".utf8)))
        let started = Date()
        var closed = false
        while !closed, Date().timeIntervalSince(started) < 40 {
            if !client.send([0x58], timeout: 1) { closed = true; break }
            closed = client.readToClose(timeout: 1).closed
        }
        let held = Date().timeIntervalSince(started)
        #expect(closed && held < 25, "a trickling client held a connection for \(Int(held)) s")
    }

    // More connections than the cap (32): the excess is closed at once.
    do {
        let clients = try (0..<40).map { _ in try RawClient(port: port) }
        var closedAtOnce = 0
        for client in clients where client.readToClose(timeout: 0.2).closed { closedAtOnce += 1 }
        // (Already-closed ones answer at once; the 0.2 s per open one bounds the loop at 8 s.)
        #expect(closedAtOnce >= 8, "\(closedAtOnce) of 40 connections closed at accept")
    }

    // Still serving.
    let status = try httpRequest("GET", port: port, path: "/status")
    #expect(status.status == 200, "\(status)")
}
