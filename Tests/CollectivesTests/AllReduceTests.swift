import Collectives
import Logging
import NIOCore
import PeerTestSupport
import Testing

/// Small integers: every partial sum and product is exact in every type, so the ring's
/// order of operations cannot hide behind rounding and results compare bit for bit.
private func value(_ op: ReduceOp, rank r: Int, index i: Int, type: DType) -> Double {
    switch op {
    case .sum, .avg: return Double((r * 3 + i * 5) % 13) - (type == .u8 ? 0 : 4)
    case .min, .max: return Double((r * 7 + i * 3) % 11) - (type == .u8 ? 0 : 5)
    case .prod: return (i + r) % 3 == 0 ? 2 : 1
    }
}

private func encode(_ values: [Double], _ type: DType) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(values.count * type.size)
    func append<T>(_ x: T) { withUnsafeBytes(of: x) { out += $0 } }
    for v in values {
        switch type {
        case .f32: append(Float(v))
        case .f64: append(v)
        case .f16: append(Float16(Float(v)))
        case .bf16: append(ReduceKernels.floatToBF16(Float(v)))
        case .i32: append(Int32(v))
        case .i64: append(Int64(v))
        case .u8: append(UInt8(v))
        }
    }
    return out
}

/// The closed form, computed apart from the ring: fold over ranks, then avg's one division.
private func expected(_ op: ReduceOp, _ type: DType, n: Int, count: Int) -> [UInt8] {
    var out: [UInt8] = []
    for i in 0..<count {
        let xs = (0..<n).map { value(op, rank: $0, index: i, type: type) }
        let folded: Double = switch op {
        case .sum, .avg: xs.reduce(0, +)
        case .min: xs.min()!
        case .max: xs.max()!
        case .prod: xs.reduce(1, *)
        }
        guard op == .avg else {
            out += encode([folded], type)
            continue
        }
        func append<T>(_ x: T) { withUnsafeBytes(of: x) { out += $0 } }
        switch type {
        case .f32: append(Float(folded) / Float(n))
        case .f64: append(folded / Double(n))
        case .f16: append(Float16(Float(folded) / Float(n)))
        case .bf16: append(ReduceKernels.floatToBF16(Float(folded) / Float(n)))
        case .i32: append(Int32(folded) / Int32(n))
        case .i64: append(Int64(folded) / Int64(n))
        case .u8: append(UInt8(folded) / UInt8(n))
        }
    }
    return out
}

private func run(_ peer: Communicator, _ input: [UInt8], _ type: DType, _ options: AllReduceOptions) async throws -> [UInt8] {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(input.count, 1), alignment: 64)
    defer { buffer.deallocate() }
    let view = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<input.count])
    view.copyBytes(from: input)
    try await peer.allReduce(view, type: type, options: options)
    return Array(view)
}

/// One all-reduce of `count` small integers on every peer, checked against the closed form on
/// each. 64-byte segments: every chunk of more than a few elements spans many frames.
private func expectClosedForm(_ peers: [Communicator], _ type: DType, _ op: ReduceOp, count: Int, tag: UInt64,
                              _ label: String) async throws {
    let options = AllReduceOptions(tag: tag, op: op, segmentBytes: 64)
    let results = try await onEveryPeer(peers) { rank, peer in
        let input = encode((0..<count).map { value(op, rank: rank, index: $0, type: type) }, type)
        return try await run(peer, input, type, options)
    }
    let want = expected(op, type, n: peers.count, count: count)
    for (rank, got) in results.enumerated() {
        #expect(got == want, "\(label) \(type) \(op) count=\(count) rank=\(rank)")
    }
}

@Test(arguments: [1, 2, 3, 4, 5, 8])
func everyOpAndTypeMatchesTheClosedFormOnEveryPeer(n: Int) async throws {
    try await withCluster(size: n) { peers in
        var tag: UInt64 = 0
        for type in DType.allCases {
            for op in ReduceOp.allCases {
                for count in Set([0, 1, max(n - 1, 0), n, 37 * n + 3]).sorted() {
                    tag += 1
                    try await expectClosedForm(peers, type, op, count: count, tag: tag, "n=\(n)")
                }
            }
        }
    }
}

@Test(arguments: [2, 3, 4])
func largeBuffersWithDefaultAndOddSegmentSizes(n: Int) async throws {
    try await withCluster(size: n) { peers in
        let count = 250_007
        for (tag, segment) in [(UInt64(1), 1 << 20), (2, 40_000), (3, 4096)] {
            let options = AllReduceOptions(tag: tag, op: .sum, segmentBytes: segment)
            let results = try await onEveryPeer(peers) { rank, peer in
                var values = (0..<count).map { Float(value(.sum, rank: rank, index: $0, type: .f32)) }
                try await peer.allReduce(&values, options: options)
                return values
            }
            let want = (0..<count).map { i in Float((0..<n).map { value(.sum, rank: $0, index: i, type: .f32) }.reduce(0, +)) }
            for got in results { #expect(got == want) }
        }
    }
}

/// Random data (never constant: constant blocks would hide parity bugs).
private func randomFloats(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    var rng = SplitMix64(seed: seed)
    return (0..<count).map { _ in Float.random(in: -scale...scale, using: &rng) }
}

/// One all-reduce of `input` into a fresh output first filled with NaN bytes (the in-place form's
/// scratch buffer could still hold an earlier result), so that an element never written shows.
private func runIntoSpoiledOutput(_ peer: Communicator, _ input: [Float], _ options: AllReduceOptions) async throws -> [Float] {
    let bytes = input.count * 4
    let source = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes, 1), alignment: 64)
    let result = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes, 1), alignment: 64)
    defer { source.deallocate(); result.deallocate() }
    input.withUnsafeBytes { source.copyMemory(from: $0) }
    result.initializeMemory(as: UInt8.self, repeating: 0xFF)
    try await peer.allReduce(input: UnsafeRawBufferPointer(rebasing: source[0..<bytes]),
                             output: UnsafeMutableRawBufferPointer(rebasing: result[0..<bytes]), type: .f32, options: options)
    return (0..<input.count).map { result.load(fromByteOffset: $0 * 4, as: Float.self) }
}

@Test(arguments: [2, 3, 5], [Quantization.int8MinMax, .int8ZeroPoint])
func quantizedResultsAreBitIdenticalAndWithinTheBound(n: Int, mode: Quantization) async throws {
    try await withCluster(size: n) { peers in
        let count = 70_001
        for (tag, op) in [(UInt64(1), ReduceOp.sum), (2, .avg)] {
            let options = AllReduceOptions(tag: tag, op: op, quantization: mode, segmentBytes: 32 << 10)
            let inputs = (0..<n).map { randomFloats(count, seed: UInt64($0 + 1) * 77) }
            let results = try await onEveryPeer(peers) { rank, peer in
                var values = inputs[rank]
                try await peer.allReduce(&values, options: options)
                return values
            }
            // Bit-parity: every peer holds the same bytes.
            for r in 1..<n { #expect(results[r].map(\.bitPattern) == results[0].map(\.bitPattern)) }
            // Each of the n quantizations on a value's path (n − 1 hops, then the owner's) errs by
            // at most half a step of its block; a partial sum of k inputs in [−1, 1] spans at most 2k.
            var bound = (1...n).reduce(Float(0)) { $0 + Float(2 * $1) / 255 / 2 } * 1.001 + 1e-5
            if op == .avg { bound /= Float(n) }
            var worst: Float = 0
            for i in 0..<count {
                var exact = (0..<n).reduce(0.0) { $0 + Double(inputs[$1][i]) }
                if op == .avg { exact /= Double(n) }
                worst = max(worst, abs(Float(exact) - results[0][i]))
            }
            #expect(worst <= bound, "worst error \(worst) > bound \(bound)")
            #expect(worst > 0, "int8 quantization cannot be exact on random data")

            // Results written past the caches (the path of large buffers) are the same bytes.
            let streamed = AllReduceOptions(tag: tag + 10, op: op, quantization: mode, segmentBytes: options.segmentBytes,
                                            streamResultsFromBytes: 0)
            let again = try await onEveryPeer(peers) { rank, peer in
                try await runIntoSpoiledOutput(peer, inputs[rank], streamed)
            }
            for r in 0..<n { #expect(again[r].map(\.bitPattern) == results[0].map(\.bitPattern), "streamed, rank \(r)") }
        }
    }
}

@Test func quantizedOtherFloatTypesStayInParity() async throws {
    try await withCluster(size: 3) { peers in
        for (tag, type) in [(UInt64(1), DType.f16), (2, .bf16), (3, .f64)] {
            let options = AllReduceOptions(tag: tag, op: .sum, quantization: .int8MinMax, segmentBytes: 4096)
            let results = try await onEveryPeer(peers) { rank, peer in
                let input = encode(randomFloats(5000, seed: UInt64(rank) + 9).map(Double.init), type)
                return try await run(peer, input, type, options)
            }
            #expect(results[1] == results[0] && results[2] == results[0], "\(type)")
        }
    }
}

@Test func concurrentCollectivesWithDifferentTagsStartedInDifferentOrders() async throws {
    try await withCluster(size: 3) { peers in
        let sizes: [UInt64: Int] = [11: 100_000, 12: 3_001, 13: 50_000]
        let results = try await onEveryPeer(peers) { rank, peer in
            // Each peer starts the three collectives in its own order.
            let order: [UInt64] = rank == 0 ? [11, 12, 13] : rank == 1 ? [13, 12, 11] : [12, 11, 13]
            return try await withThrowingTaskGroup(of: (UInt64, [Float]).self) { group in
                for tag in order {
                    group.addTask {
                        var values = (0..<sizes[tag]!).map { Float(($0 + rank + Int(tag)) % 9) }
                        try await peer.allReduce(&values, options: AllReduceOptions(tag: tag, op: .max, segmentBytes: 8192))
                        return (tag, values)
                    }
                    try await Task.sleep(for: .milliseconds(rank * 5))
                }
                var out: [UInt64: [Float]] = [:]
                for try await (tag, values) in group { out[tag] = values }
                return out
            }
        }
        for tag in sizes.keys {
            let want = (0..<sizes[tag]!).map { i in (0..<3).map { Float((i + $0 + Int(tag)) % 9) }.max()! }
            for r in 0..<3 { #expect(results[r][tag] == want, "tag \(tag) rank \(r)") }
        }
    }
}

@Test func aPeerThatLeavesAbortsTheCollectiveAndLeavesInputsUntouched() async throws {
    try await withCluster(size: 3) { peers in
        let count = 400_000
        let outcomes = try await onEveryPeer(peers) { rank, peer -> (Bool, Bool) in
            if rank == 2 {
                try await Task.sleep(for: .milliseconds(100))
                await peer.shutdown()
                return (false, true)
            }
            let original = (0..<count).map { Float($0 % 1000) + Float(rank) }
            var values = original
            do {
                try await peer.allReduce(&values, options: AllReduceOptions(tag: 5, timeout: .seconds(20)))
                return (false, values == original)
            } catch let error as CollectiveError {
                return (error.code == .membershipChanged, values == original)
            }
        }
        #expect(outcomes[0] == (true, true))
        #expect(outcomes[1] == (true, true))
        // A broken ring refuses further collectives until it is formed again.
        var values: [Float] = [1]
        await #expect(throws: CollectiveError.self) { try await peers[0].allReduce(&values, options: AllReduceOptions(tag: 6)) }
    }
}

@Test func reusingARunningTagIsRefused() async throws {
    try await withCluster(size: 2) { peers in
        let errors = try await onEveryPeer(peers) { rank, peer -> Int in
            guard rank == 0 else { return 0 }
            return try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<2 {
                    group.addTask {
                        var values = [Float](repeating: 1, count: 1000)
                        do {
                            try await peer.allReduce(&values, options: AllReduceOptions(tag: 1, timeout: .milliseconds(300)))
                            return 0
                        } catch let error as CollectiveError where error.code == .invalidArgument {
                            return 1
                        } catch {
                            return 0
                        }
                    }
                }
                return try await group.reduce(0, +)
            }
        }
        #expect(errors[0] == 1)
    }
}

@Test func backToBackCollectivesNeverMix() async throws {
    try await withCluster(size: 3) { peers in
        let results = try await onEveryPeer(peers) { rank, peer -> [[Float]] in
            var out: [[Float]] = []
            for call in 0..<40 {
                // Sizes change from call to call, so a frame taken for the wrong call cannot fit.
                var values = [Float](repeating: Float(rank + call), count: 10 + (call % 5) * 300)
                let id = CollectiveID(purpose: .pseudoGradient, sequence: UInt64(call / 2), point: UInt64(call % 2))
                try await peer.allReduce(&values, options: AllReduceOptions(id: id, op: .sum, segmentBytes: 256))
                out.append(values)
            }
            return out
        }
        for call in 0..<40 {
            let want = [Float](repeating: Float(3 * call + 3), count: 10 + (call % 5) * 300)
            for r in 0..<3 { #expect(results[r][call] == want, "call \(call) rank \(r)") }
        }
    }
}

@Test func trafficCountersSeeEveryFrame() async throws {
    try await withCluster(size: 2) { peers in
        _ = try await onEveryPeer(peers) { rank, peer -> Bool in
            var values = [Float](repeating: Float(rank), count: 100_000)
            try await peer.allReduce(&values, options: AllReduceOptions(tag: 1))
            return true
        }
        // Each peer sends its half once (reduce-scatter) and the owned half once (all-gather),
        // one frame each at the default segment size: 2 × 200,000 bytes + 2 headers.
        for peer in peers {
            #expect(peer.traffic.bytesSent == 400_056)
            #expect(peer.traffic.bytesReceived == 400_056)
        }
    }
}

/// Several TCP streams per neighbour: the same closed-form results, and for quantized data the
/// same bytes as with one stream (which stream carries a segment never changes its value).
@Test(arguments: [2, 3, 4], [2, 3])
func severalStreamsPerNeighbourGiveTheSameBytesAsOne(n: Int, streams: Int) async throws {
    let count = 50_003
    let inputs = (0..<n).map { randomFloats(count, seed: UInt64($0 + 1) * 91) }
    let quantized = AllReduceOptions(tag: 7, op: .avg, quantization: .int8MinMax, segmentBytes: 4 << 10)
    @Sendable func quantizedRun(_ peers: [Communicator]) async throws -> [[UInt32]] {
        try await onEveryPeer(peers) { rank, peer in
            var values = inputs[rank]
            try await peer.allReduce(&values, options: quantized)
            return values.map(\.bitPattern)
        }
    }
    let reference = try await withCluster(size: n) { try await quantizedRun($0) }
    var options = CommunicatorOptions()
    options.streams = streams
    try await withCluster(size: n, options: options) { peers in
        let results = try await quantizedRun(peers)
        for r in 0..<n { #expect(results[r] == reference[0], "rank \(r) differs from the one-stream run") }
        // Every op on five types, short segments so that every stream carries several frames per step.
        var tag: UInt64 = 100
        for type in [DType.f32, .f64, .bf16, .i64, .u8] {
            for op in ReduceOp.allCases {
                for count in [1, n, 37 * n + 3, 1000] {
                    tag += 1
                    try await expectClosedForm(peers, type, op, count: count, tag: tag, "n=\(n) streams=\(streams)")
                }
            }
        }
        // Two collectives in flight at once share the streams.
        let pair = try await onEveryPeer(peers) { rank, peer in
            async let a = run(peer, encode((0..<5000).map { value(.sum, rank: rank, index: $0, type: .f32) }, .f32), .f32,
                              AllReduceOptions(tag: 1, op: .sum, segmentBytes: 256))
            async let b = run(peer, encode((0..<3000).map { value(.max, rank: rank, index: $0, type: .i32) }, .i32), .i32,
                              AllReduceOptions(tag: 2, op: .max, segmentBytes: 512))
            return try await [a, b]
        }
        for got in pair {
            #expect(got[0] == expected(.sum, .f32, n: n, count: 5000))
            #expect(got[1] == expected(.max, .i32, n: n, count: 3000))
        }
    }
}

/// Members that disagree on the stream count cannot form a ring: each side refuses the other's
/// links (with a log line naming --streams) and formation fails instead of mixing layouts.
@Test func membersWithDifferentStreamCountsDoNotFormARing() async throws {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    var peers: [Communicator] = []
    for streams in [1, 2] {
        var options = CommunicatorOptions()
        options.streams = streams
        options.ringFormationTimeout = .seconds(2)
        peers.append(Communicator(localId: UInt64(0xB000 + streams), key: testKey, options: options, logger: logger))
    }
    var members: [PeerEndpoint] = []
    for peer in peers {
        members.append(PeerEndpoint(id: peer.localId, host: "127.0.0.1", port: try await peer.listen(host: "127.0.0.1", port: 0)))
    }
    let view = RingView(epoch: 1, members: members)
    let outcomes = try await onEveryPeer(peers) { _, peer in
        do {
            try await peer.connect(view: view)
            return "formed"
        } catch let error as CollectiveError {
            return "\(error.code)"
        }
    }
    #expect(outcomes == ["timedOut", "timedOut"], "\(outcomes)")
    for peer in peers { await peer.shutdown() }
    var bad = CommunicatorOptions()
    bad.streams = 0
    let invalid = Communicator(localId: 0xB100, key: testKey, options: bad, logger: logger)
    await #expect(throws: CollectiveError.self) { try await invalid.connect(view: RingView(epoch: 1, members: [members[0]])) }
}

@Test func aCollectiveIdentityRunsOncePerRing() async throws {
    try await withCluster(size: 2) { peers in
        let second = try await onEveryPeer(peers) { rank, peer -> CollectiveError.Code? in
            var values = [Float](repeating: 1, count: 100)
            let options = AllReduceOptions(id: CollectiveID(purpose: .pseudoGradient, sequence: 7, point: 1))
            try await peer.allReduce(&values, options: options)
            // The same collective again is a caller's bug: refused at once, never paired with
            // whatever the neighbour runs next.
            do {
                try await peer.allReduce(&values, options: options)
                return nil
            } catch let error as CollectiveError {
                return error.code
            }
        }
        #expect(second == [.invalidArgument, .invalidArgument])
    }
}

@Test func membersThatNameACollectiveDifferentlyNeverCombineIt() async throws {
    // Two members a revision apart (one missed a step): their pseudo-gradients must not be
    // summed. Each waits for frames of its own collective, which never come, and times out.
    try await withCluster(size: 2) { peers in
        let outcomes = try await onEveryPeer(peers) { rank, peer -> String in
            var values = [Float](repeating: Float(rank + 1), count: 1000)
            let options = AllReduceOptions(id: CollectiveID(purpose: .pseudoGradient, sequence: UInt64(10 + rank)),
                                           op: .sum, timeout: .milliseconds(600))
            do {
                try await peer.allReduce(&values, options: options)
                return "completed"
            } catch let error as CollectiveError {
                return values == [Float](repeating: Float(rank + 1), count: 1000) ? "\(error.code), input intact" : "\(error.code), input changed"
            }
        }
        for outcome in outcomes {
            #expect(outcome == "timedOut, input intact" || outcome == "membershipChanged, input intact", "\(outcome)")
        }
    }
}

@Test(arguments: [1, 2, 3, 5], [1, 2])
func allGatherReturnsEveryBlockInRankOrder(n: Int, streams: Int) async throws {
    var options = CommunicatorOptions()
    options.streams = streams
    try await withCluster(size: n, options: options) { peers in
        let gathered = try await onEveryPeer(peers) { rank, peer -> [[[UInt8]]] in
            var rounds: [[[UInt8]]] = []
            for round in 0..<3 {
                let block = (0..<(200 + round)).map { UInt8(truncatingIfNeeded: rank * 31 + round * 7 + $0) }
                rounds.append(try await peer.allGather(block, id: CollectiveID(purpose: .syncRecords, point: UInt64(round))))
            }
            return rounds
        }
        for round in 0..<3 {
            let want = (0..<n).map { r in (0..<(200 + round)).map { UInt8(truncatingIfNeeded: r * 31 + round * 7 + $0) } }
            for r in 0..<n { #expect(gathered[r][round] == want, "n=\(n) round \(round) rank \(r)") }
        }
    }
}

@Test func allGatherBlocksOfDifferentSizesAreRefused() async throws {
    try await withCluster(size: 3) { peers in
        let outcomes = try await onEveryPeer(peers) { rank, peer -> Bool in
            do {
                _ = try await peer.allGather([UInt8](repeating: 1, count: rank == 1 ? 20 : 10),
                                             id: CollectiveID(purpose: .syncRecords), timeout: .seconds(5))
                return false
            } catch is CollectiveError {
                return true
            }
        }
        #expect(outcomes == [true, true, true])
    }
}

/// The collectives are the same over every kind of link: TCP on loopback (two streams) gives the
/// bytes the in-memory links give.
@Test func socketsAndInMemoryLinksGiveTheSameBytes() async throws {
    let n = 3
    let inputs = (0..<n).map { randomFloats(20_011, seed: UInt64($0 + 5) * 7) }
    @Sendable func run(_ peers: [Communicator]) async throws -> [[UInt32]] {
        try await onEveryPeer(peers) { rank, peer in
            var values = inputs[rank]
            try await peer.allReduce(&values, options: AllReduceOptions(tag: 3, op: .avg, quantization: .int8MinMax, segmentBytes: 8 << 10))
            return values.map(\.bitPattern)
        }
    }
    let memory = try await withCluster(size: n) { try await run($0) }
    var options = CommunicatorOptions()
    options.streams = 2
    let sockets = try await withSocketCluster(size: n, options: options) { try await run($0) }
    #expect(sockets == memory)
    #expect(Set(memory.map { $0 }).count == 1)
}
