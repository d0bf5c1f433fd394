import Testing
@testable import Collectives

private func sample(revision: UInt64 = 3) throws -> SharedState {
    let state = try SharedState(specs: [
        TensorSpec(name: "theta", dtype: .f32, shape: [3, 5]),
        TensorSpec(name: "momentum", dtype: .f32, shape: [15]),
        TensorSpec(name: "step", dtype: .i64, shape: [1]),
    ], revision: revision)
    for (i, j) in (0..<15).enumerated() {
        state.floats("theta")![i] = Float(j) * 0.25 - 1
        state.floats("momentum")![i] = Float(i % 4)
    }
    state.bytes("step")!.storeBytes(of: Int64(42).littleEndian, as: Int64.self)
    return state
}

@Test func digestIsPinnedAndSeesEveryByte() throws {
    let state = try sample()
    // The canonical encoding is part of the protocol: this value may only change with it.
    #expect(state.digest().description == pinnedDigest)
    #expect(state.specs.map(\.name) == ["momentum", "step", "theta"], "name order")

    let other = try sample()
    other.floats("theta")![7] = other.floats("theta")![7].nextUp
    #expect(other.digest() != state.digest())
    let bumped = try sample(revision: 4)
    #expect(bumped.digest() != state.digest())
    let renamed = try SharedState(specs: [TensorSpec(name: "thetb", dtype: .f32, shape: [3, 5])])
    let original = try SharedState(specs: [TensorSpec(name: "theta", dtype: .f32, shape: [3, 5])])
    #expect(renamed.digest() != original.digest())
    let reshaped = try SharedState(specs: [TensorSpec(name: "theta", dtype: .f32, shape: [5, 3])])
    #expect(reshaped.digest() != original.digest())
}

// Computed independently with Python (struct + hashlib) from the layout in SharedState.swift.
private let pinnedDigest = "25f0c2bae0dd34ece0f5e5dbe239cf57216a39b21c934c6bdd5e6d93f893beb0"

@Test func rangesReassembleTheStateInAnyOrder() throws {
    let source = try sample(revision: 9)
    let target = try sample(revision: 0)
    target.floats("theta")!.update(repeating: 0)
    let size = source.encodedSize
    // Three "donors" serve interleaved ranges; the joiner writes them as they come.
    let cuts = [0, 7, source.headerSize + 5, size - 3, size]
    var ranges = zip(cuts, cuts.dropFirst()).map { $0..<$1 }
    ranges.reverse()
    for r in ranges {
        let piece = UnsafeMutableRawBufferPointer.allocate(byteCount: r.count, alignment: 8)
        defer { piece.deallocate() }
        source.read(r, into: piece.baseAddress!)
        try target.write(r, from: piece.baseAddress!)
    }
    #expect(target.revision == 9)
    #expect(target.digest() == source.digest())
}

@Test func aDifferentLayoutIsRefused() throws {
    let source = try SharedState(specs: [TensorSpec(name: "theta", dtype: .f32, shape: [4])])
    let target = try SharedState(specs: [TensorSpec(name: "theta", dtype: .f32, shape: [2, 2])])
    let all = UnsafeMutableRawBufferPointer.allocate(byteCount: source.encodedSize, alignment: 8)
    defer { all.deallocate() }
    source.read(0..<source.encodedSize, into: all.baseAddress!)
    #expect(throws: SharedState.LayoutError.self) { try target.write(0..<source.encodedSize, from: all.baseAddress!) }
    #expect(throws: SharedState.LayoutError.self) { try target.write(0..<(target.encodedSize + 1), from: all.baseAddress!) }
    #expect(throws: SharedState.LayoutError.self) {
        try SharedState(specs: [TensorSpec(name: "a", dtype: .f32, shape: [1]), TensorSpec(name: "a", dtype: .f32, shape: [2])])
    }
}
