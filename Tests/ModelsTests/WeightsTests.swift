import Foundation
import Testing
@testable import Models

/// safetensors files of a model's parameters: written and read back bit for bit, and every kind
/// of damaged or mismatched file refused with one line naming the file and the problem, the
/// model's parameters untouched.
@Suite struct WeightsTests {
    static func scratch(_ name: String) -> String {
        NSTemporaryDirectory() + "peernode-weights-\(UUID().uuidString)-\(name)"
    }

    /// The MoE on digits, its parameters overwritten with values that exercise the bit patterns
    /// (negative zero, subnormals, infinities, a NaN payload, large magnitudes).
    static func model(seed: UInt64 = 3) throws -> TrainingTask {
        let task = try TrainingTask.make(TaskSpec(model: .moe, dataset: "digits", seed: seed))
        let special: [Float] = [-0.0, .leastNonzeroMagnitude, -.leastNormalMagnitude, .infinity, -.infinity,
                                Float(bitPattern: 0x7FC0_1234), .greatestFiniteMagnitude, 1e-30]
        for (i, v) in special.enumerated() { task.parameters.values[i * 977] = v }
        return task
    }

    static func bits(_ store: ParameterStore) -> [UInt32] { store.values.map(\.bitPattern) }

    static func expectRefused(_ path: String, into store: ParameterStore, _ fragment: String,
                              sourceLocation: SourceLocation = #_sourceLocation) {
        let before = bits(store)
        do {
            try ModelWeights.load(path, into: store)
            Issue.record("\(path) was accepted; expected '\(fragment)'", sourceLocation: sourceLocation)
        } catch let e as WeightsError {
            #expect(e.description.contains(fragment), "\(e)", sourceLocation: sourceLocation)
            #expect(e.description.contains(path), "\(e)", sourceLocation: sourceLocation)
            #expect(!e.description.contains("\n"), "one line: \(e)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        }
        let unchanged = bits(store) == before
        #expect(unchanged, "a refused file changed the parameters", sourceLocation: sourceLocation)
    }

    @Test func roundTripIsBitExact() throws {
        let source = try Self.model()
        let bytes = try ModelWeights.encode(UnsafeBufferPointer(source.parameters.values), infos: source.parameters.infos,
                                            metadata: ["model": "moe", "dataset": "digits", "revision": "7", "quote\"d": "a\\b\n"])
        // Header: 8-byte length, then JSON padded to a multiple of 8; data = 4 bytes per parameter.
        let headerLength = bytes.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        #expect(headerLength % 8 == 0 && bytes.count == 8 + headerLength + 4 * source.parameters.count)
        let path = Self.scratch("round.safetensors")
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let (flat, metadata) = try ModelWeights.read(path, infos: source.parameters.infos)
        let equal = flat.map(\.bitPattern) == Self.bits(source.parameters)
        #expect(equal, "the file did not give back the written bits")
        #expect(metadata == ["model": "moe", "dataset": "digits", "revision": "7", "quote\"d": "a\\b\n"])
        // Tensors are stored sorted by name, contiguously, each with the model's shape.
        let (tensors, _) = try SafeTensorsFile.read(path, maximumDataBytes: 1 << 30)
        #expect(tensors.map(\.name) == source.parameters.infos.map(\.name).sorted())
        let router = try #require(tensors.first { $0.name == "moe.block0.router" })
        #expect(router.shape == [64, 8] && router.dtype == "F32")
        // The same parameters encode to the same bytes.
        #expect(try flat.withUnsafeBufferPointer { try ModelWeights.encode($0, infos: source.parameters.infos, metadata: metadata) } == bytes)
        // Training never starts from the infinities and the NaN in there.
        let target = try TrainingTask.make(TaskSpec(model: .moe, dataset: "digits", seed: 99))
        Self.expectRefused(path, into: target.parameters, "tensor 'moe.input.weight' holds inf at element 2931")
    }

    @Test func loadReplacesTheParameters() throws {
        let source = try TrainingTask.make(TaskSpec(model: .moe, dataset: "digits", seed: 1))
        for _ in 0..<3 { source.step() }
        let path = Self.scratch("trained.safetensors")
        try Data(try ModelWeights.encode(UnsafeBufferPointer(source.parameters.values), infos: source.parameters.infos,
                                         metadata: [:])).write(to: URL(fileURLWithPath: path))
        let target = try TrainingTask.make(TaskSpec(model: .moe, dataset: "digits", seed: 2))
        let differBefore = Self.bits(target.parameters) != Self.bits(source.parameters)
        #expect(differBefore)
        try ModelWeights.load(path, into: target.parameters)
        let equalAfter = Self.bits(target.parameters) == Self.bits(source.parameters)
        #expect(equalAfter)
        // Another model's file names the first parameter it lacks.
        let gcn = try TrainingTask.make(TaskSpec(model: .gcn, dataset: "cora"))
        Self.expectRefused(path, into: gcn.parameters, "missing tensor 'gcn.conv1.weight'")
    }

    @Test func damagedFilesAreRefused() throws {
        let task = try Self.model()
        let good = try ModelWeights.encode(UnsafeBufferPointer(task.parameters.values), infos: task.parameters.infos,
                                           metadata: ["model": "moe"])
        let headerLength = good.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        let header = String(decoding: good[8..<(8 + headerLength)], as: UTF8.self)
        let data = Array(good[(8 + headerLength)...])
        func file(_ name: String, _ bytes: [UInt8]) throws -> String {
            let path = Self.scratch(name)
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            return path
        }
        func withHeader(_ json: String, data: [UInt8] = data) -> [UInt8] {
            var out: [UInt8] = []
            withUnsafeBytes(of: UInt64(json.utf8.count).littleEndian) { out += $0 }
            return out + Array(json.utf8) + data
        }
        let store = task.parameters
        Self.expectRefused(try file("short", Array(good.prefix(5))), into: store, "truncated file")
        Self.expectRefused(try file("cut-header", Array(good.prefix(8 + headerLength / 2))), into: store, "truncated file")
        Self.expectRefused(try file("cut-data", Array(good.dropLast(4))), into: store, "truncated file")
        Self.expectRefused(try file("tail", good + [0, 0, 0, 0]), into: store, "4 bytes after the last tensor")
        var huge = good
        huge.replaceSubrange(0..<8, with: [0, 0, 0, 0, 0, 0, 0, 1])
        Self.expectRefused(try file("huge-header", huge), into: store, "header length")
        Self.expectRefused(try file("json", withHeader("{\"moe.head.bias\": {\"dtype\": ")), into: store, "bad header JSON")
        Self.expectRefused(try file("array", withHeader("[1, 2]     ")), into: store, "bad header JSON")
        Self.expectRefused(try file("missing", withHeader(header.replacingOccurrences(of: "\"moe.head.bias\"", with: "\"moe.head.bias2\""))),
                           into: store, "missing tensor 'moe.head.bias'")
        Self.expectRefused(try file("shape", withHeader(header.replacingOccurrences(of: "\"shape\":[64,10]", with: "\"shape\":[10,64]"))),
                           into: store, "has shape [10, 64], the model needs [64, 10]")
        // Same byte count, other dtype: a shape change keeps the offsets consistent.
        Self.expectRefused(try file("dtype", withHeader(header.replacingOccurrences(of: "\"dtype\":\"F32\",\"shape\":[10]",
                                                                                      with: "\"dtype\":\"F16\",\"shape\":[20]"))),
                           into: store, "is F16, the model needs F32")
        Self.expectRefused(try file("unknown-dtype", withHeader(header.replacingOccurrences(of: "\"dtype\":\"F32\",\"shape\":[10]",
                                                                                              with: "\"dtype\":\"F33\",\"shape\":[10]"))),
                           into: store, "unknown dtype F33")
        Self.expectRefused(try file("size", withHeader(header.replacingOccurrences(of: "\"shape\":[10]", with: "\"shape\":[11]"))),
                           into: store, "data_offsets span 40 bytes")
        // The first tensor (a 128-float bias) moved 4 bytes on: a hole before it, an overlap after.
        let first = "\"moe.block0.expert0.fc1.bias\":{\"dtype\":\"F32\",\"shape\":[128],\"data_offsets\":[0,512]}"
        #expect(header.contains(first))
        let moved = header.replacingOccurrences(of: first, with: first.replacingOccurrences(of: "[0,512]", with: "[4,516]"))
        Self.expectRefused(try file("hole", withHeader(moved)), into: store, "starts at 4, expected 0")
        let extra = String(header.dropLast(header.count - (header.lastIndex(of: "}")!.utf16Offset(in: header)))) + ",\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\(data.count),\(data.count + 4)]}}"
        Self.expectRefused(try file("extra", withHeader(extra, data: data + [0, 0, 0, 0])), into: store, "tensor 'x' is not a parameter")
        Self.expectRefused(Self.scratch("absent"), into: store, "cannot open")
    }

    @Test func encoderRefusesWhatItCannotWrite() throws {
        let task = try Self.model()
        let short = Array(task.parameters.values.dropLast())
        #expect(throws: WeightsError.self) {
            _ = try short.withUnsafeBufferPointer { try ModelWeights.encode($0, infos: task.parameters.infos, metadata: [:]) }
        }
        let t = SafeTensorsFile.Tensor(name: "a", dtype: "F32", shape: [2], bytes: [0, 0, 0, 0])
        #expect(throws: WeightsError.self) { _ = try SafeTensorsFile.encode([t]) }
        #expect(throws: WeightsError.self) { _ = try SafeTensorsFile.encode([SafeTensorsFile.Tensor(name: "a", dtype: "F32", shape: [1], bytes: [0, 0, 0, 0]),
                                                                              SafeTensorsFile.Tensor(name: "a", dtype: "F32", shape: [1], bytes: [0, 0, 0, 0])]) }
    }
}
