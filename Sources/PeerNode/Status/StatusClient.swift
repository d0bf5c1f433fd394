#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// A one-request HTTP/1.1 GET over a plain socket, for `peernode status`.
///
/// Not URLSession: on Linux that is libcurl, which honours `http_proxy` (a loopback status port
/// sent to a proxy) and adds a runtime library to a daemon that otherwise needs none. Not
/// Hummingbird's client side either: it has none without async-http-client. One request with
/// `Connection: close` needs little: connect, write, read to EOF, all under one deadline.
struct StatusClient {
    struct Response {
        var status: Int
        var headers: [String: String]
        var body: Data
    }

    var host: String
    var port: Int
    var timeout: Duration = .seconds(5)
    /// Answers bigger than this are garbage, not a status document.
    var maximumResponseBytes = 16 << 20

    private var target: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    func get(_ path: String) throws -> Response {
        let deadline = ContinuousClock.now + timeout
        let fd = try dial(deadline: deadline)
        defer { close(fd) }
        let request = "GET \(path) HTTP/1.1\r\nHost: \(target)\r\nAccept: */*\r\nConnection: close\r\n"
            + "User-Agent: peernode-status/\(StatusReport.version)\r\n\r\n"
        try send(Array(request.utf8), to: fd, deadline: deadline)
        return try Self.parse(receive(from: fd, deadline: deadline), from: target)
    }

    private func dial(deadline: ContinuousClock.Instant) throws -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Glibc)
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
        hints.ai_socktype = SOCK_STREAM
        #endif
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let first = list else {
            throw StatusClientError("cannot resolve \(host): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(first) }
        var lastError = "no address"
        var next: UnsafeMutablePointer<addrinfo>? = first
        while let info = next {
            next = info.pointee.ai_next
            let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
            guard fd >= 0 else { lastError = Self.errorText(); continue }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            if connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 { return fd }
            guard errno == EINPROGRESS else { lastError = Self.errorText(); close(fd); continue }
            guard try wait(fd, for: Int16(POLLOUT), deadline: deadline) else {
                close(fd)
                throw StatusClientError("no answer from \(target) within \(timeout) (connect timed out)")
            }
            var soError: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &length)
            if soError == 0 { return fd }
            lastError = String(cString: strerror(soError))
            close(fd)
        }
        throw StatusClientError("cannot connect to \(target): \(lastError)")
    }

    private func send(_ bytes: [UInt8], to fd: Int32, deadline: ContinuousClock.Instant) throws {
        var offset = 0
        while offset < bytes.count {
            // MSG_NOSIGNAL: a peer that closed early gives EPIPE, not a SIGPIPE that kills us.
            let n = bytes[offset...].withUnsafeBytes { sendWithoutSignal(fd, $0.baseAddress, $0.count) }
            if n > 0 { offset += n; continue }
            guard n < 0, errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR else {
                throw StatusClientError("cannot send to \(target): \(Self.errorText())")
            }
            guard try wait(fd, for: Int16(POLLOUT), deadline: deadline) else {
                throw StatusClientError("no answer from \(target) within \(timeout)")
            }
        }
    }

    private func receive(from fd: Int32, deadline: ContinuousClock.Instant) throws -> Data {
        var data = Data()
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n == 0 { return data }
            if n > 0 {
                data.append(contentsOf: chunk[..<n])
                guard data.count <= maximumResponseBytes else {
                    throw StatusClientError("\(target) sent more than \(maximumResponseBytes) bytes: not a status port?")
                }
                continue
            }
            guard errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR else {
                throw StatusClientError("cannot read from \(target): \(Self.errorText())")
            }
            guard try wait(fd, for: Int16(POLLIN), deadline: deadline) else {
                throw StatusClientError("no answer from \(target) within \(timeout)")
            }
        }
    }

    /// True when `fd` is ready; false when the deadline passed first.
    private func wait(_ fd: Int32, for events: Int16, deadline: ContinuousClock.Instant) throws -> Bool {
        while true {
            let left = deadline - ContinuousClock.now
            guard left > .zero else { return false }
            let ms = Int32(clamping: left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1)
            var entry = pollfd(fd: fd, events: events, revents: 0)
            let rc = poll(&entry, 1, ms)
            if rc > 0 { return true }
            if rc < 0, errno != EINTR { throw StatusClientError("poll: \(Self.errorText())") }
        }
    }

    /// Status line, headers, and a body framed by Content-Length, chunked encoding, or EOF.
    static func parse(_ data: Data, from target: String) throws -> Response {
        let bytes = [UInt8](data)
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let end = bytes.firstRange(of: separator) else {
            throw StatusClientError(bytes.isEmpty ? "\(target) closed the connection without an answer"
                                                  : "\(target) did not answer HTTP (no header end)")
        }
        let head = String(decoding: bytes[..<end.lowerBound], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ", maxSplits: 2)
        guard statusLine.count >= 2, statusLine[0].hasPrefix("HTTP/1."), let status = Int(statusLine[1]),
              (100...599).contains(status)
        else {
            throw StatusClientError("\(target) did not answer HTTP: '\(head.prefix(80))'")
        }
        var headers: [String: String] = [:]
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Array(bytes[end.upperBound...])
        if headers["transfer-encoding"]?.lowercased().contains("chunked") == true {
            body = try dechunk(body, from: target)
        } else if let length = headers["content-length"].flatMap({ Int($0) }) {
            guard length >= 0 else { throw StatusClientError("\(target) sent a negative Content-Length") }
            guard body.count >= length else {
                throw StatusClientError("\(target) sent \(body.count) of \(length) body bytes")
            }
            body = Array(body.prefix(length))
        }
        return Response(status: status, headers: headers, body: Data(body))
    }

    private static func dechunk(_ bytes: [UInt8], from target: String) throws -> [UInt8] {
        var out: [UInt8] = []
        var index = 0
        while true {
            guard let lineEnd = bytes[index...].firstRange(of: [13, 10]) else {
                throw StatusClientError("\(target) sent a truncated chunked body")
            }
            let sizeText = String(decoding: bytes[index..<lineEnd.lowerBound], as: UTF8.self)
            guard let size = Int(sizeText.split(separator: ";").first ?? "", radix: 16), size >= 0 else {
                throw StatusClientError("\(target) sent a bad chunk size '\(sizeText.prefix(20))'")
            }
            index = lineEnd.upperBound
            if size == 0 { return out }
            // Compared without adding to `index`: a huge size must not overflow.
            guard size <= bytes.count - index, bytes.count - index - size >= 2,
                  bytes[index + size] == 13, bytes[index + size + 1] == 10 else {
                throw StatusClientError("\(target) sent a truncated or malformed chunk")
            }
            out += bytes[index..<index + size]
            index += size + 2
        }
    }

    private static func errorText() -> String { String(cString: strerror(errno)) }
}

private func sendWithoutSignal(_ fd: Int32, _ base: UnsafeRawPointer?, _ count: Int) -> Int {
    #if canImport(Glibc)
    return Glibc.send(fd, base, count, Int32(MSG_NOSIGNAL))
    #else
    return Darwin.send(fd, base, count, 0)
    #endif
}

struct StatusClientError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
