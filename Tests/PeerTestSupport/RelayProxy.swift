#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A TCP relay between a dialer and a target port that keeps what the dialer sent and can alter
/// one byte of it: a tap on the wire (is anything readable?) and an attacker on the path (is an
/// altered byte caught?). Every thread it starts is joined by ``stop()``.
public final class RelayProxy: @unchecked Sendable {
    public let port: Int
    private let target: Int
    private let listening: Int32
    private let lock = NSLock()
    private var seen: [UInt8] = []
    private var flipAt: Int?
    private var forwarded = 0
    private var sockets: [Int32] = []
    private var threads: [Thread] = []
    private let done = DispatchGroup()
    /// Bytes kept of what dialers sent (the first ones; enough to look for plaintext).
    public static let keep = 4 << 20

    public init(to target: Int) throws {
        self.target = target
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        listening = fd
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        listen(fd, 16)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        port = Int(UInt16(bigEndian: address.sin_port))
        start { [self] in acceptLoop() }
    }

    /// What dialers sent through the relay so far (the first ``keep`` bytes).
    public var sent: [UInt8] { lock.withLock { seen } }

    /// Flips the bits of the dialer-to-target byte at `offset` (counted over every connection),
    /// once; nil: relay faithfully.
    public func flip(atOffset offset: Int?) { lock.withLock { flipAt = offset.map { forwarded + $0 } } }

    private func start(_ body: @escaping @Sendable () -> Void) {
        done.enter()
        let thread = Thread { [done] in
            body()
            done.leave()
        }
        lock.withLock { threads.append(thread) }
        thread.start()
    }

    private func acceptLoop() {
        while true {
            let client = accept(listening, nil, nil)
            guard client >= 0 else { return }
            let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = UInt16(target).bigEndian
            let ok = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            lock.withLock { sockets += [client, upstream] }
            guard ok else { Glibc.shutdown(client, Int32(SHUT_RDWR)); continue }
            start { [self] in pump(from: client, to: upstream, tapped: true) }
            start { [self] in pump(from: upstream, to: client, tapped: false) }
        }
    }

    private func pump(from: Int32, to: Int32, tapped: Bool) {
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = recv(from, &buffer, buffer.count, 0)
            guard n > 0 else { break }
            if tapped {
                lock.withLock {
                    if seen.count < Self.keep { seen += buffer[0..<min(n, Self.keep - seen.count)] }
                    if let at = flipAt, at >= forwarded, at < forwarded + n {
                        buffer[at - forwarded] ^= 0xFF
                        flipAt = nil
                    }
                    forwarded += n
                }
            }
            var offset = 0
            while offset < n {
                let w = buffer.withUnsafeBytes { Glibc.send(to, $0.baseAddress! + offset, n - offset, Int32(MSG_NOSIGNAL)) }
                guard w > 0 else { break }
                offset += w
            }
            if offset < n { break }
        }
        Glibc.shutdown(to, Int32(SHUT_WR))
    }

    /// Closes everything and joins every thread.
    public func stop() {
        Glibc.shutdown(listening, Int32(SHUT_RDWR))
        for fd in lock.withLock({ sockets }) { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
        done.wait()
        close(listening)
        for fd in lock.withLock({ sockets }) { close(fd) }
    }
}

/// Whether `needle` occurs in `haystack`.
public func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
    Data(haystack).range(of: Data(needle)) != nil
}
