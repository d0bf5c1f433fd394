#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A blocking TCP socket for the bulk data plane.
///
/// Collective payloads go straight between the caller's memory and the kernel (send from the
/// input, receive into the result) instead of through NIO's buffers, which measured three extra
/// full-buffer copies per all-reduce (docs/benchmarks.md). Each socket is used by at most one
/// sending and one receiving thread.
public final class BlockingSocket: Link, @unchecked Sendable {
    public let fd: Int32
    private let closed = NSLock()
    private var isClosed = false

    public struct IOError: Error, CustomStringConvertible {
        public var operation: String
        public var errno: Int32
        public var description: String {
            errno == 0 ? "\(operation): connection closed by peer" : "\(operation): \(String(cString: strerror(errno)))"
        }
    }

    /// Socket buffer bytes (each direction; Linux doubles the value for its bookkeeping) for a
    /// peer on another host: room for a sender to run ahead of a busy receiver, and for a long
    /// path (one stream's rate is at most buffer / round-trip time).
    public static let remoteBufferBytes: Int32 = 4 << 20
    /// The same for a peer on this host, where the "link" is two memory copies: with small
    /// buffers the kernel's packet buffers are still in cache when the receiver copies them out
    /// (fp32 all-reduce 10–20 % faster on loopback than with 4 MiB; docs/benchmarks.md).
    public static let sameHostBufferBytes: Int32 = 256 << 10

    /// Whether the peer is on this host (``sameHost(local:remote:)`` of the connection's ends).
    public let peerIsOnThisHost: Bool

    init(fd: Int32) {
        self.fd = fd
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        peerIsOnThisHost = Self.endAddresses(fd).map { Self.sameHost(local: $0.local, remote: $0.remote) } ?? false
        var size = peerIsOnThisHost ? Self.sameHostBufferBytes : Self.remoteBufferBytes
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Whether a connection from IP address `local` to `remote` (4 or 16 bytes, network order)
    /// stays on this host: either end is a loopback address, or both ends have the same address
    /// (a connection to one of this host's own addresses has it as its source too).
    static func sameHost(local: [UInt8], remote: [UInt8]) -> Bool {
        func isLoopback(_ a: [UInt8]) -> Bool {
            if a.count == 4 { return a[0] == 127 }
            guard a.count == 16 else { return false }
            if a[..<15].allSatisfy({ $0 == 0 }) && a[15] == 1 { return true }              // ::1
            return a[..<10].allSatisfy { $0 == 0 } && a[10] == 0xFF && a[11] == 0xFF && a[12] == 127  // ::ffff:127.x.y.z
        }
        return isLoopback(local) || isLoopback(remote) || local == remote
    }

    /// The IP addresses (network order) of both ends of a connected socket, nil if either is unknown.
    private static func endAddresses(_ fd: Int32) -> (local: [UInt8], remote: [UInt8])? {
        func address(_ get: (Int32, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32) -> [UInt8]? {
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let ok = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { get(fd, $0, &length) == 0 }
            }
            guard ok else { return nil }
            switch Int32(storage.ss_family) {
            case AF_INET:
                return withUnsafeBytes(of: &storage) { raw in
                    withUnsafeBytes(of: raw.load(as: sockaddr_in.self).sin_addr) { Array($0) }
                }
            case AF_INET6:
                return withUnsafeBytes(of: &storage) { raw in
                    withUnsafeBytes(of: raw.load(as: sockaddr_in6.self).sin6_addr) { Array($0) }
                }
            default:
                return nil
            }
        }
        guard let local = address({ getsockname($0, $1, $2) }), let remote = address({ getpeername($0, $1, $2) }) else {
            return nil
        }
        return (local, remote)
    }

    deinit { close() }

    /// The remote end's IP address as text (e.g. `127.0.0.1`, `::1`), nil if unknown.
    public var remoteHost: String? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let ok = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) == 0 }
        }
        guard ok else { return nil }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        let family = Int32(storage.ss_family)
        let done: Bool = withUnsafeBytes(of: &storage) { raw in
            switch family {
            case AF_INET:
                var a = raw.load(as: sockaddr_in.self).sin_addr
                return inet_ntop(AF_INET, &a, &text, socklen_t(text.count)) != nil
            case AF_INET6:
                var a = raw.load(as: sockaddr_in6.self).sin6_addr
                return inet_ntop(AF_INET6, &a, &text, socklen_t(text.count)) != nil
            default:
                return false
            }
        }
        return done ? String(cString: text) : nil
    }

    /// Resolves `host` (numeric or a name) and connects, giving up after `timeout` seconds.
    public static func connect(host: String, port: Int, timeout: Double) throws -> BlockingSocket {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &result)
        guard rc == 0, let first = result else {
            throw IOError(operation: "resolve \(host)", errno: rc == EAI_SYSTEM ? errno : EHOSTUNREACH)
        }
        defer { freeaddrinfo(result) }
        var lastError: Int32 = ECONNREFUSED
        var info: UnsafeMutablePointer<addrinfo>? = first
        while let ai = info {
            info = ai.pointee.ai_next
            let fd = Glibc.socket(ai.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { lastError = errno; continue }
            setTimeouts(fd, timeout)
            if Glibc.connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0 {
                return BlockingSocket(fd: fd)
            }
            lastError = errno
            Glibc.close(fd)
        }
        throw IOError(operation: "connect \(host):\(port)", errno: lastError)
    }

    /// Bounds blocking calls (0: wait forever). The handshake uses a bound; bulk transfer does
    /// not, since aborts shut the socket down instead.
    public func setTimeouts(_ seconds: Double) { Self.setTimeouts(fd, seconds) }

    /// Caps this socket's send rate (kernel TCP pacing, `SO_MAX_PACING_RATE`); 0 lifts the cap.
    /// Returns false if the kernel refused. A 64-bit value needs Linux 4.20 or later; older
    /// kernels read 32 bits, so caps of 4 GB/s and more would be cut there.
    @discardableResult
    public func setMaxSendRate(bytesPerSecond: UInt64) -> Bool {
        #if os(Linux)
        var rate: UInt64 = bytesPerSecond == 0 ? UInt64.max : bytesPerSecond
        return setsockopt(fd, SOL_SOCKET, 47 /* SO_MAX_PACING_RATE */, &rate, socklen_t(MemoryLayout<UInt64>.size)) == 0
        #else
        return false
        #endif
    }

    static func setTimeouts(_ fd: Int32, _ seconds: Double) {
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Writes every byte of every piece (writev, retried on partial writes and EINTR).
    ///
    /// On Linux through `sendmsg` with `MSG_NOSIGNAL`: a write to a link whose peer has gone must
    /// fail with EPIPE, not raise SIGPIPE, whose default action kills the whole process (nothing
    /// in a library may rely on the process ignoring it; the test runner does not).
    public func send(_ pieces: [UnsafeRawBufferPointer]) throws {
        var vecs = pieces.filter { $0.count > 0 }.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }
        var index = 0
        while index < vecs.count {
            let n = vecs[index...].withUnsafeMutableBufferPointer { v in
                #if os(Linux)
                var message = msghdr()
                message.msg_iov = v.baseAddress
                message.msg_iovlen = min(v.count, 1024)
                return sendmsg(fd, &message, Int32(MSG_NOSIGNAL))
                #else
                return writev(fd, v.baseAddress, Int32(min(v.count, 1024)))
                #endif
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw IOError(operation: "send", errno: errno)
            }
            var written = n
            while index < vecs.count, written >= vecs[index].iov_len {
                written -= vecs[index].iov_len
                index += 1
            }
            if written > 0 {
                vecs[index].iov_base = vecs[index].iov_base + written
                vecs[index].iov_len -= written
            }
        }
    }

    /// Reads exactly `count` bytes into `buffer`.
    public func receive(into buffer: UnsafeMutableRawPointer, count: Int) throws {
        var done = 0
        while done < count {
            let n = recv(fd, buffer + done, count - done, 0)
            if n > 0 {
                done += n
            } else if n == 0 {
                throw IOError(operation: "receive", errno: 0)
            } else if errno != EINTR {
                throw IOError(operation: "receive", errno: errno)
            }
        }
    }

    /// Reads exactly `count` bytes into `buffer`, all of them by `deadline`; past it, throws
    /// `IOError` with `ETIMEDOUT`.
    ///
    /// A whole-read bound, unlike `SO_RCVTIMEO` (``setTimeouts(_:)``), which every arriving byte
    /// restarts: a peer that trickles a byte now and then would hold the reader for ever. Waits
    /// in `poll`, so it costs a system call more per wake-up than ``receive(into:count:)``; meant
    /// for reads that must not outlast a stopped peer (state transfer), not the ring's hot path.
    public func receive(into buffer: UnsafeMutableRawPointer, count: Int, deadline: ContinuousClock.Instant) throws {
        var done = 0
        while done < count { done += try receiveSome(into: buffer + done, count: count - done, deadline: deadline) }
    }

    /// Reads what is there, at least one byte and at most `count`, waiting for it until
    /// `deadline` (nil: for ever); returns how many. For layers that frame bytes themselves (TLS).
    public func receiveSome(into buffer: UnsafeMutableRawPointer, count: Int, deadline: ContinuousClock.Instant?) throws -> Int {
        while true {
            if let deadline {
                let left = ContinuousClock.now.duration(to: deadline)
                guard left > .zero else { throw IOError(operation: "receive (deadline passed)", errno: ETIMEDOUT) }
                let (seconds, attoseconds) = left.components
                // Rounded up, so that a wait never ends just before the deadline and spins.
                let ms = Int32(clamping: seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
                var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ready = poll(&entry, 1, ms)
                if ready < 0 {
                    if errno == EINTR { continue }
                    throw IOError(operation: "receive", errno: errno)
                }
                if ready == 0 { continue }  // the check above throws, or waits out the rest
            }
            let n = recv(fd, buffer, count, deadline == nil ? 0 : Int32(MSG_DONTWAIT))
            if n > 0 { return n }
            if n == 0 { throw IOError(operation: "receive", errno: 0) }
            if errno == EINTR || (deadline != nil && (errno == EAGAIN || errno == EWOULDBLOCK)) { continue }
            throw IOError(operation: "receive", errno: errno)
        }
    }

    /// Unblocks any thread in send or receive on this socket; the fd stays valid until close.
    /// After close it does nothing: the fd number may already belong to another socket.
    public func shutdown() {
        closed.lock()
        defer { closed.unlock() }
        guard !isClosed else { return }
        _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
    }

    public func close() {
        closed.lock()
        defer { closed.unlock() }
        guard !isClosed else { return }
        isClosed = true
        _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
        _ = Glibc.close(fd)
    }
}
