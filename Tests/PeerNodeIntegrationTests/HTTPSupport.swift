import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct HTTPResult {
    var status: Int
    var headers: [String: String]
    var body: String
}

struct HTTPFailure: Error, CustomStringConvertible {
    var description: String
}

/// One HTTP/1.1 request to 127.0.0.1 over a blocking socket (10 s receive timeout), `Connection:
/// close`, read to EOF. Independent of the code under test, so a bug in `peernode status`'s client
/// cannot hide one in the server.
func httpRequest(_ method: String, port: Int, path: String) throws -> HTTPResult {
    #if canImport(Glibc)
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #else
    let fd = socket(AF_INET, SOCK_STREAM, 0)
    #endif
    guard fd >= 0 else { throw HTTPFailure(description: "socket: \(errno)") }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let rc = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard rc == 0 else { throw HTTPFailure(description: "connect to 127.0.0.1:\(port): errno \(errno)") }
    let request = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    let sent = request.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
    guard sent == request.utf8.count else { throw HTTPFailure(description: "short write") }
    var data = [UInt8]()
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n == 0 { break }
        guard n > 0 else { throw HTTPFailure(description: "read from 127.0.0.1:\(port): errno \(errno)") }
        data += chunk[..<n]
    }
    let text = String(decoding: data, as: UTF8.self)
    guard let split = text.range(of: "\r\n\r\n") else { throw HTTPFailure(description: "no header end in \(text.prefix(200))") }
    var lines = text[..<split.lowerBound].components(separatedBy: "\r\n")
    let statusLine = lines.removeFirst().split(separator: " ")
    guard statusLine.count >= 2, let status = Int(statusLine[1]) else {
        throw HTTPFailure(description: "bad status line in \(text.prefix(200))")
    }
    var headers: [String: String] = [:]
    for line in lines {
        guard let colon = line.firstIndex(of: ":") else { continue }
        headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    var body = String(text[split.upperBound...])
    if let length = headers["content-length"].flatMap({ Int($0) }) {
        body = String(decoding: Array(body.utf8).prefix(length), as: UTF8.self)
    }
    return HTTPResult(status: status, headers: headers, body: body)
}

/// A loopback TCP port that nothing listens on (bound, then released).
func closedPort() throws -> Int {
    #if canImport(Glibc)
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #else
    let fd = socket(AF_INET, SOCK_STREAM, 0)
    #endif
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let rc = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p -> Int32 in
            guard bind(fd, p, length) == 0 else { return -1 }
            return getsockname(fd, p, &length)
        }
    }
    guard rc == 0 else { throw HTTPFailure(description: "cannot find a free port") }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// The local addresses listening on `port`, from /proc/net/tcp (Linux), as "a.b.c.d".
func listeningAddresses(port: Int) -> [String]? {
    guard let table = try? String(contentsOfFile: "/proc/net/tcp", encoding: .utf8) else { return nil }
    var out: [String] = []
    for line in table.split(separator: "\n").dropFirst() {
        let fields = line.split(separator: " ")
        guard fields.count > 3, fields[3] == "0A" else { continue }  // 0A: LISTEN
        let local = fields[1].split(separator: ":")
        guard local.count == 2, Int(local[1], radix: 16) == port, let raw = UInt32(local[0], radix: 16) else { continue }
        // Printed as the host-order value of a network-order address: little-endian machines reverse it.
        let bytes = withUnsafeBytes(of: raw.littleEndian) { Array($0) }
        out.append(bytes.map(String.init).joined(separator: "."))
    }
    return out
}

/// A listener on 127.0.0.1 that answers every connection with `answer` (raw bytes, so the test can
/// send malformed HTTP), then closes it. Returns the port; the listener lives until `stop()`.
final class CannedHTTPServer: @unchecked Sendable {
    let port: Int
    private let fd: Int32

    init(answer: [UInt8]) throws {
        #if canImport(Glibc)
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let listener = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        fd = listener
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let listening = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p -> Bool in
                bind(listener, p, length) == 0 && getsockname(listener, p, &length) == 0 && listen(listener, 8) == 0
            }
        }
        guard listening else { close(listener); throw HTTPFailure(description: "cannot listen") }
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread.detachNewThread {
            while true {
                let client = accept(listener, nil, nil)
                if client < 0 { return }
                var request = [UInt8](repeating: 0, count: 4096)
                _ = read(client, &request, request.count)
                _ = answer.withUnsafeBytes { write(client, $0.baseAddress, $0.count) }
                close(client)
            }
        }
    }

    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }
}
