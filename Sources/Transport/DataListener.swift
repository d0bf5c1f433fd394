#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import NIOCore

/// The data port: accepts blocking sockets for bulk collective traffic and authenticates each
/// with the cluster key before handing it on.
public final class DataListener: @unchecked Sendable {
    private let fd: Int32
    public let port: Int
    private let key: ClusterKey
    private let localId: UInt64
    private let logger: Logger
    private let handshakeTimeout: Double
    /// Connections that have not finished the handshake, per port and per source address.
    public let admission: HandshakeAdmission
    /// Failed and refused handshakes are strangers' doing: logged at a bounded rate.
    private let failureLog = LogRateLimiter()
    private let onConnection: @Sendable (any SocketLink, HandshakeResult) -> Void
    /// `accept(2)` on the listening socket; tests put a function here that fails on demand.
    private let acceptCall: @Sendable (Int32) -> Int32
    /// Guards the fields below; signalled by ``stop()``, so that a loop backing off ends at once,
    /// and by the accept loop when it ends, which ``stop()`` waits for.
    private let state = NSCondition()
    private var stopped = false
    private var acceptLoopEnded = false
    /// Connection threads in progress (handshakes, and state downloads served on them); a flood of
    /// connections beyond this is closed at once instead of costing a thread each.
    private var handshaking = 0
    public static let maxConcurrentHandshakes = 64
    /// Waits after a failed accept, doubling from the first to the longest: a descriptor
    /// shortage (EMFILE, ENFILE) or a memory shortage passes only when something else lets go,
    /// and retrying at once would spin a core on an error the loop cannot fix itself.
    static let acceptBackoff = (first: 0.05, longest: 1.0)
    /// At most one log line per this many seconds about failing accepts (each says how many).
    static let acceptErrorLogInterval = 5.0

    /// Binds `host:port` (port 0: the OS chooses) and starts accepting on a thread of its own.
    /// `handshakeTimeout`: seconds for the whole handshake of an accepted connection.
    /// `maxPending`, `maxPendingPerAddress`: connections that have not finished the handshake,
    /// on this port and from one source address; the excess is closed at accept.
    public convenience init(host: String, port: Int, localId: UInt64, key: ClusterKey, handshakeTimeout: Double = 10,
                            maxPending: Int = 64, maxPendingPerAddress: Int = 32,
                            logger: Logger, onConnection: @escaping @Sendable (any SocketLink, HandshakeResult) -> Void) throws {
        try self.init(host: host, port: port, localId: localId, key: key, handshakeTimeout: handshakeTimeout,
                      maxPending: maxPending, maxPendingPerAddress: maxPendingPerAddress, logger: logger,
                      acceptCall: { accept($0, nil, nil) }, onConnection: onConnection)
    }

    init(host: String, port: Int, localId: UInt64, key: ClusterKey, handshakeTimeout: Double = 10,
         maxPending: Int = 64, maxPendingPerAddress: Int = 32, logger: Logger,
         acceptCall: @escaping @Sendable (Int32) -> Int32,
         onConnection: @escaping @Sendable (any SocketLink, HandshakeResult) -> Void) throws {
        self.acceptCall = acceptCall
        self.admission = HandshakeAdmission(total: maxPending, perAddress: maxPendingPerAddress)
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
        let fd = Glibc.socket(ai.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
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

    /// Accepts until ``stop()``, and only until then: any other failure (EMFILE, ENFILE, ENOMEM,
    /// ENOBUFS, ...) is logged and retried after a backoff, since a node whose data port stopped
    /// accepting could never again join a ring or serve its state, while looking alive.
    private func acceptLoop() {
        defer {
            state.withLock {
                acceptLoopEnded = true
                state.broadcast()
            }
        }
        var backoff = Self.acceptBackoff.first
        var failures = 0  // since the last accept that worked
        var unlogged = 0  // since the last log line
        var lastLine: ContinuousClock.Instant?
        while true {
            let client = acceptCall(fd)
            if client < 0 {
                let code = errno
                if state.withLock({ stopped }) { return }  // stop() shut the socket down
                if code == EINTR || code == ECONNABORTED { continue }
                failures += 1
                unlogged += 1
                let now = ContinuousClock.now
                if lastLine.map({ $0.duration(to: now) >= .seconds(Self.acceptErrorLogInterval) }) ?? true {
                    logger.error("data port cannot accept: \(String(cString: strerror(code))); retrying (\(unlogged) failed accepts since the last such line)",
                                 metadata: ["node.id": "\(hex(localId))"])
                    lastLine = now
                    unlogged = 0
                }
                let until = Date(timeIntervalSinceNow: backoff)
                let stopping = state.withLock { () -> Bool in
                    while !stopped, state.wait(until: until) {}
                    return stopped
                }
                if stopping { return }
                backoff = min(backoff * 2, Self.acceptBackoff.longest)
                continue
            }
            if failures > 0 {
                logger.notice("data port accepting again after \(failures) failed accepts", metadata: ["node.id": "\(hex(localId))"])
                failures = 0
                unlogged = 0
                backoff = Self.acceptBackoff.first
            }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            let socket = BlockingSocket(fd: client)
            let remote = socket.remoteHost ?? "?"
            if let refusal = admission.admit(remote) {
                logFailure("data port: refused a connection from \(remote) at accept: \(refusal)")
                socket.close()
                continue
            }
            let admitted = state.withLock { () -> Bool in
                guard handshaking < Self.maxConcurrentHandshakes else { return false }
                handshaking += 1
                return true
            }
            guard admitted else {
                admission.release(remote)
                logFailure("data port: refused a connection from \(remote) at accept: \(Self.maxConcurrentHandshakes) connection threads busy")
                socket.close()
                continue
            }
            // Each handshake on a thread of its own, so that a silent client cannot stall accepting.
            let thread = Thread { [self] in
                authenticate(socket, remote: remote)
                state.withLock { handshaking -= 1 }
            }
            thread.start()
        }
    }

    private func authenticate(_ socket: BlockingSocket, remote: String) {
        let deadline = ContinuousClock.now + .milliseconds(Int64(handshakeTimeout * 1000))
        let outcome = Result { try BlockingSocket.secure(socket, localId: localId, key: key, role: .acceptor, deadline: deadline) }
        admission.release(remote)
        switch outcome {
        case .success(let (link, result)):
            socket.setTimeouts(0)
            guard !state.withLock({ stopped }) else { return }
            onConnection(link, result)
        case .failure(let error):
            // The peer is told why, in plaintext: a slow one (it may be slow, not hostile), and a
            // TLS peer at a plaintext port (its TLS layer names the plaintext answer). No wait
            // for it to read. On a TLS port a plaintext frame would only confuse the peer.
            if case .plaintext = key.security, let handshake = error as? HandshakeError, [.timeout, .security].contains(handshake.code) {
                let reason = handshake.code == .timeout ? "handshake not finished within \(handshakeTimeout) s" : handshake.message
                HandshakeStateMachine.sendReject(on: socket, code: handshake.code, reason: reason)
            }
            logFailure("data-port handshake failed with \(remote): \(escapedForLog("\(error)"))", level: .error)
            socket.close()
        }
    }

    /// One line per failed or refused connection, at most ``LogRateLimiter``'s rate.
    private func logFailure(_ line: String, level: Logger.Level = .warning) {
        guard let suppressed = failureLog.admit() else { return }
        logger.log(level: level, "\(LogRateLimiter.annotate(line, suppressed: suppressed))", metadata: ["node.id": "\(hex(localId))"])
    }

    /// Stops accepting and returns once the accept thread has ended; connections already handed
    /// on are not affected. The listening descriptor is closed only then: closed earlier, its
    /// number could be reused by another socket while the loop still calls `accept` on it.
    public func stop() {
        let first = state.withLock { () -> Bool in
            guard !stopped else { return false }
            stopped = true
            state.broadcast()
            return true
        }
        // Wakes an accept in progress (it fails with EINVAL), so the loop sees `stopped`.
        if first { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
        state.withLock {
            while !acceptLoopEnded { state.wait() }
        }
        if first { _ = Glibc.close(fd) }
    }

    deinit { stop() }
}

extension BlockingSocket {
    /// Dials and authenticates a data connection, over TLS unless the key says plaintext.
    public static func dial(host: String, port: Int, localId: UInt64, key: ClusterKey, purpose: ConnectionPurpose,
                            info: [UInt8], timeout: Double) throws -> (any SocketLink, HandshakeResult) {
        let started = ContinuousClock.now
        let socket = try connect(host: host, port: port, timeout: timeout)
        do {
            let result = try secure(socket, localId: localId, key: key, role: .dialer(purpose, info: info),
                                    deadline: started + .milliseconds(Int64(max(timeout, 0.001) * 1000)))
            socket.setTimeouts(0)
            return result
        } catch {
            socket.close()
            throw error
        }
    }

    /// The TLS handshake when the key asks for TLS, then the peernode handshake bound to it.
    static func secure(_ socket: BlockingSocket, localId: UInt64, key: ClusterKey, role: HandshakeStateMachine.Role,
                       deadline: ContinuousClock.Instant) throws -> (any SocketLink, HandshakeResult) {
        var machine = HandshakeStateMachine(role: role, localId: localId, key: key)
        let link: any SocketLink
        switch key.security {
        case .plaintext:
            link = socket
        case .tls(let context):
            let tlsRole: TLSSession.Role
            if case .dialer = role { tlsRole = .client } else { tlsRole = .server }
            let (secured, binding, prefix): (TLSLink, [UInt8], UInt32?)
            do {
                (secured, binding, prefix) = try TLSLink.establish(on: socket, context: context, role: tlsRole, deadline: deadline)
            } catch let error as TLSError {
                throw HandshakeError(error)
            }
            machine.binding = binding
            machine.peerPrefix = prefix
            link = secured
        }
        let result = try BlockingHandshake.run(link, machine: &machine, deadline: deadline)
        return (link, result)
    }
}
