// Fuzz targets, one per decoder that takes bytes from outside (docs/testing.md, "Fuzzing"). Built
// only by scripts/fuzz.sh (`-sanitize=fuzzer -DPEERNODE_FUZZ`), where libFuzzer's driver is the
// entry point and PEERNODE_FUZZ_TARGET picks the target; a normal build has none of this.
#if PEERNODE_FUZZ
@testable import Collectives
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
@testable import Transport

/// The decoders under fuzzing. Each takes one input and must return without trapping; a
/// decoded value that does not survive its own round trip is a bug too (`preconditionFailure`).
enum FuzzTarget: String, CaseIterable {
    /// The frame header and the streaming frame decoder, fed in pieces.
    case frame
    /// The handshake state machine, both roles, fed the frames the input decodes into.
    case handshake
    /// A membership message: decoded, re-encoded, and given to a member's and a coordinator's machine.
    case membership
    /// A state server answering the state requests in the input over a socket pair.
    case stateRequest = "state-request"
    /// The config file reader of `peernode run --config`.
    case config
    /// The status port's HTTP request path: its connection guard in front of the HTTP parser.
    case http
    /// The TLS engine of every link (OpenSSL behind TLSSession): a server fed the input as a
    /// client's first flight, and a client fed it as the server's answer, in pieces.
    case tls

    func run(_ bytes: [UInt8]) {
        switch self {
        case .frame: FuzzTargets.frame(bytes)
        case .handshake: FuzzTargets.handshake(bytes)
        case .membership: FuzzTargets.membership(bytes)
        case .stateRequest: FuzzTargets.stateRequest(bytes)
        case .config: FuzzTargets.config(bytes)
        case .http: FuzzTargets.http(bytes)
        case .tls: FuzzTargets.tls(bytes)
        }
    }
}

enum FuzzTargets {
    static let key = try! ClusterKey(string: "peernode fuzzing cluster key 0123456789")

    /// The input cut in pieces whose sizes come from its first byte (1 to 256 bytes each), so
    /// that decoders see frames split at every place.
    static func pieces(_ bytes: [UInt8]) -> [[UInt8]] {
        guard let first = bytes.first else { return [] }
        let size = Int(first) + 1
        let rest = Array(bytes.dropFirst())
        return stride(from: 0, to: rest.count, by: size).map { Array(rest[$0..<min($0 + size, rest.count)]) }
    }

    static func tls(_ bytes: [UInt8]) {
        guard case .tls(let context) = key.security else { return }
        for role in [TLSSession.Role.server, .client] {
            guard let session = try? TLSSession(context: context, role: role) else { continue }
            var out: [UInt8] = []
            try? session.handshake()
            session.drainOutput(into: &out)
            var plaintext = [UInt8](repeating: 0, count: 4096)
            for piece in pieces(bytes) {
                do {
                    try piece.withUnsafeBytes { try session.feed($0) }
                    try session.handshake()
                    session.drainOutput(into: &out)
                    if session.established {
                        _ = try plaintext.withUnsafeMutableBytes { try session.open(into: $0.baseAddress!, count: $0.count) }
                    }
                } catch {
                    break
                }
            }
        }
    }

    static func frame(_ bytes: [UInt8]) {
        if bytes.count >= FrameHeader.size {
            _ = try? bytes.withUnsafeBytes { try FrameHeader.parse(UnsafeRawBufferPointer(rebasing: $0[0..<FrameHeader.size]), limits: FrameLimits()) }
        }
        var limits = FrameLimits()
        limits.maxControlPayload = 4096
        var decoder = FrameDecoder(limits: limits)
        var buffer = ByteBuffer()
        do {
            for piece in pieces(bytes) {
                buffer.writeBytes(piece)
                while let event = try decoder.next(&buffer) {
                    switch event {
                    case .frame(let header, let payload):
                        precondition(payload.readableBytes == Int(header.length))
                    case .dataFragment(let header, let offset, let slice):
                        precondition(offset + slice.readableBytes <= Int(header.length))
                    }
                }
                buffer.discardReadBytes()
            }
        } catch {}
    }

    static func handshake(_ bytes: [UInt8]) {
        var acceptor = HandshakeStateMachine(role: .acceptor, localId: 1, key: key)
        var dialer = HandshakeStateMachine(role: .dialer(.ring, info: [1, 2, 3]), localId: 2, key: key)
        _ = dialer.start()
        var decoder = FrameDecoder()
        var buffer = ByteBuffer(bytes: bytes)
        var toDialer = bytes.first.map { $0 & 1 == 1 } ?? false
        while let event = try? decoder.next(&buffer), case .frame(let header, let payload) = event {
            let step = toDialer ? dialer.receive(header.type, payload) : acceptor.receive(header.type, payload)
            if case .authenticated? = step.outcome {
                // Only a peer holding the key gets this far, and the input cannot know the nonces.
                preconditionFailure("a handshake authenticated from fuzzed bytes")
            }
            toDialer.toggle()
        }
    }

    private static func node(_ id: UInt64) -> NodeInfo {
        NodeInfo(id: id, controlHost: "127.0.0.1", controlPort: Int(7000 + id), dataHost: "127.0.0.1",
                 dataPort: Int(8000 + id), inRing: true)
    }

    static func membership(_ bytes: [UInt8]) {
        guard let message = try? MembershipMessage.decode(bytes) else { return }
        let again = try? MembershipMessage.decode(message.encode())
        precondition(again == message, "a decoded membership message does not survive its round trip")
        // The machines take it from a member, from the coordinator and from a stranger.
        let now = ContinuousClock.now
        let view = MembershipView(epoch: 2, line: 7, coordinator: 1, nodes: [node(1), node(2), node(3)])
        var member = MemberMachine(me: node(3), interval: .milliseconds(100), timeout: .seconds(1), now: now)
        _ = member.join(seeds: [.init(host: "127.0.0.1", port: 7001)], now: now)
        _ = member.linkOpened(1, now: now)
        _ = member.receive(.commit(view, departed: []), from: 1, now: now)
        var coordinator = CoordinatorMachine(me: 1, view: view, failover: nil, adopted: nil,
                                             interval: .milliseconds(100), timeout: .seconds(1), now: now)
        for from: UInt64 in [1, 2, 99] {
            _ = member.receive(message, from: from, now: now)
            _ = coordinator.receive(message, from: from, now: now)
        }
        _ = member.tick(now: now + .seconds(2))
        _ = coordinator.tick(now: now + .seconds(2))
    }

    static let fuzzState: (StateServer, Digest) = {
        let state = try! SharedState(specs: [TensorSpec(name: "w", dtype: .f32, shape: [3000])], revision: 5)
        var logger = Logger(label: "fuzz")
        logger.logLevel = .critical
        return (StateServer(state: state, logger: logger), state.digest())
    }()

    /// Requests for the state server. Where the input's first byte is odd, each request gets
    /// the state's real revision and digest, so that the answering paths are reached too.
    static func stateRequest(_ bytes: [UInt8]) {
        let (server, digest) = fuzzState
        var input = Array(bytes.dropFirst())
        if let first = bytes.first, first & 1 == 1 {
            var at = 0
            while at + FrameHeader.size + 40 <= input.count {
                let payload = at + FrameHeader.size
                withUnsafeBytes(of: UInt64(5).littleEndian) { input.replaceSubrange(payload..<payload + 8, with: $0) }
                input.replaceSubrange(payload + 8..<payload + 40, with: digest.bytes)
                at = payload + 53
            }
        }
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else { return }
        let ours = BlockingSocket(fd: fds[0])
        let theirs = BlockingSocket(fd: fds[1])
        // The answers are read (and dropped) on another thread, so the server never blocks.
        let drained = Drained()
        let fd = fds[0]
        let reader = Thread {
            var sink = [UInt8](repeating: 0, count: 65536)
            while sink.withUnsafeMutableBytes({ recv(fd, $0.baseAddress, $0.count, 0) }) > 0 {}
            drained.finish()
        }
        reader.start()
        _ = input.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
        server.serve(theirs, peer: 2)
        drained.wait()
        ours.close()
    }

    private final class Drained: @unchecked Sendable {
        private let condition = NSCondition()
        private var done = false
        func finish() { condition.withLock { done = true; condition.broadcast() } }
        func wait() { condition.withLock { while !done { condition.wait() } } }
    }

    /// The config file's decoding (`RunSettings.load(configFile:)` without the file): the typed
    /// settings and the one-line message every refusal is turned into.
    static func config(_ bytes: [UInt8]) {
        do {
            _ = try JSONDecoder().decode(RunSettings.self, from: Data(bytes))
        } catch let error as DecodingError {
            _ = RunSettings.describe(error)
        } catch {}
    }

    /// Answers every request head with a small response, as the status responder would.
    private final class Answerer: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .end = unwrapInboundIn(data) else { return }
            var headers = HTTPHeaders()
            headers.add(name: "content-length", value: "3")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "ok\n")))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }

    static func http(_ bytes: [UInt8]) {
        let channel = EmbeddedChannel()
        let limits = StatusLimits()
        do {
            try channel.pipeline.syncOperations.addHandler(StatusConnectionGuard(limits: limits, open: httpConnections))
            var decoderLimits = NIOHTTPDecoderLimitConfiguration()
            decoderLimits.maxHeaderFieldCount = limits.maxHeaderCount
            decoderLimits.maxHeaderListSize = limits.maxHeaderBytes
            decoderLimits.maxHeaderFieldSize = limits.maxHeaderBytes
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                withPipeliningAssistance: false, withErrorHandling: true, withOutboundHeaderValidation: true,
                withEncoderConfiguration: .init(), withDecoderLimitConfiguration: decoderLimits)
            try channel.pipeline.syncOperations.addHandler(Answerer())
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            for piece in pieces(bytes) where channel.isActive {
                try channel.writeInbound(ByteBuffer(bytes: piece))
            }
        } catch {}
        // (Accepting a channel the input already got closed: otherwise `finish` throws before it
        // runs what is scheduled, and the channel leaks.)
        _ = try? channel.finish(acceptAlreadyClosed: true)
    }

    static let httpConnections = StatusConnectionCount()
}

@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

nonisolated(unsafe) private var selectedTarget: FuzzTarget = .frame

/// The fuzzing build's entry point (SwiftPM links an executable's `main` to `<module>_main`):
/// libFuzzer's driver, with its usual options, on the target PEERNODE_FUZZ_TARGET names.
@_cdecl("PeerNode_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    let name = ProcessInfo.processInfo.environment["PEERNODE_FUZZ_TARGET"] ?? ""
    guard let target = FuzzTarget(rawValue: name) else {
        let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
        FileHandle.standardError.write(Data("set PEERNODE_FUZZ_TARGET to one of: \(names)\n".utf8))
        return 2
    }
    selectedTarget = target
    signal(SIGPIPE, SIG_IGN)
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        selectedTarget.run(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
        return 0
    }
}
#endif
