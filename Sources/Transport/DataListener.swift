#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging

/// The data port: accepts blocking sockets for bulk collective traffic and authenticates each
/// with the cluster key before handing it on.
public final class DataListener: @unchecked Sendable {
    private let fd: Int32
    public let port: Int
    private let key: ClusterKey
    private let localId: UInt64
    private let logger: Logger
    private let handshakeTimeout: Double
    private let onConnection: @Sendable (BlockingSocket, HandshakeResult) -> Void
    private let state = NSLock()
    private var stopped = false
    /// Connection threads in progress (handshakes, and state downloads served on them); a flood of
    /// connections beyond this is closed at once instead of costing a thread each.
    private var handshaking = 0
    public static let maxConcurrentHandshakes = 64

    /// Binds `host:port` (port 0: the OS chooses) and starts accepting on a thread of its own.
    public init(host: String, port: Int, localId: UInt64, key: ClusterKey, handshakeTimeout: Double = 10,
                logger: Logger, onConnection: @escaping @Sendable (BlockingSocket, HandshakeResult) -> Void) throws {
        self.key = key
        self.localId = localId
        self.logger = logger
        self.handshakeTimeout = handshakeTimeout
        self.onConnection = onConnection
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let ai = result else {
            throw BlockingSocket.IOError(operation: "resolve \(host)", errno: EINVAL)
        }
        defer { freeaddrinfo(result) }
        let fd = socket(ai.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        self.fd = fd
        guard fd >= 0 else { throw BlockingSocket.IOError(operation: "socket", errno: errno) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard bind(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw BlockingSocket.IOError(operation: "bind \(host):\(port)", errno: e)
        }
        guard listen(fd, 128) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw BlockingSocket.IOError(operation: "listen", errno: e)
        }
        var address = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        let family = address.ss_family
        self.port = withUnsafePointer(to: &address) { p -> Int in
            if family == sa_family_t(AF_INET6) {
                return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
            }
            return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
        }
        let thread = Thread { [self] in acceptLoop() }
        thread.name = "peernode-data-accept"
        thread.start()
    }

    private func acceptLoop() {
        while true {
            let client = accept(fd, nil, nil)
            if client < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return  // closed by stop()
            }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            let socket = BlockingSocket(fd: client)
            let admitted = state.withLock { () -> Bool in
                guard handshaking < Self.maxConcurrentHandshakes else { return false }
                handshaking += 1
                return true
            }
            guard admitted else {
                logger.warning("too many data-port connections in progress; closing a new one")
                socket.close()
                continue
            }
            // Each handshake on a thread of its own, so that a silent client cannot stall accepting.
            let thread = Thread { [self] in
                authenticate(socket)
                state.withLock { handshaking -= 1 }
            }
            thread.start()
        }
    }

    private func authenticate(_ socket: BlockingSocket) {
        socket.setTimeouts(handshakeTimeout)
        var machine = HandshakeStateMachine(role: .acceptor, localId: localId, key: key)
        do {
            let result = try BlockingHandshake.run(socket, machine: &machine)
            socket.setTimeouts(0)
            guard !state.withLock({ stopped }) else { return }
            onConnection(socket, result)
        } catch {
            logger.error("data-port handshake failed: \(error)", metadata: ["node.id": "\(hex(localId))"])
            socket.close()
        }
    }

    /// Stops accepting; connections already handed on are not affected.
    public func stop() {
        state.withLock {
            guard !stopped else { return }
            stopped = true
            _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
            _ = Glibc.close(fd)
        }
    }

    deinit { stop() }
}

extension BlockingSocket {
    /// Dials and authenticates a data connection.
    public static func dial(host: String, port: Int, localId: UInt64, key: ClusterKey, purpose: ConnectionPurpose,
                            info: [UInt8], timeout: Double) throws -> (BlockingSocket, HandshakeResult) {
        let socket = try connect(host: host, port: port, timeout: timeout)
        var machine = HandshakeStateMachine(role: .dialer(purpose, info: info), localId: localId, key: key)
        let result = try BlockingHandshake.run(socket, machine: &machine)
        socket.setTimeouts(0)
        return (socket, result)
    }
}
