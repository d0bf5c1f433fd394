import Collectives
import Foundation
import Testing
@testable import DiLoCo

private func state(_ seed: Float) throws -> SharedState {
    let s = try SharedState(specs: [TensorSpec(name: "theta", dtype: .f32, shape: [1000]),
                                    TensorSpec(name: "momentum", dtype: .f32, shape: [1000])], revision: 5)
    for i in 0..<1000 {
        s.floats("theta")![i] = Float(i) * seed
        s.floats("momentum")![i] = seed - Float(i % 7)
    }
    return s
}

private func temporaryDirectory() throws -> String {
    let dir = NSTemporaryDirectory() + "peernode-ckpt-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

@Test func roundTripKeepsStateDigestAndLocalBlob() throws {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let path = dir + "/peer.ckpt"
    let original = try state(0.5)
    try Checkpoint.write(original, local: [1, 2, 3, 4], to: path)
    let restored = try state(0)
    let local = try Checkpoint.read(path, into: restored)
    #expect(local == [1, 2, 3, 4])
    #expect(restored.digest() == original.digest())
    #expect(restored.revision == 5)
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["peer.ckpt"], "no temporary file left")
}

@Test func corruptTruncatedOrForeignFilesAreRefusedClearly() throws {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let path = dir + "/peer.ckpt"
    try Checkpoint.write(try state(0.5), to: path)
    let good = try Data(contentsOf: URL(fileURLWithPath: path))

    var flipped = good
    flipped[flipped.count - 5] ^= 0x40
    try flipped.write(to: URL(fileURLWithPath: dir + "/flipped"))
    var digestFlipped = good
    digestFlipped[12] ^= 1
    try digestFlipped.write(to: URL(fileURLWithPath: dir + "/digest"))
    try good.prefix(good.count - 10).write(to: URL(fileURLWithPath: dir + "/truncated"))
    try Data("hello".utf8).write(to: URL(fileURLWithPath: dir + "/foreign"))
    for name in ["flipped", "digest", "truncated", "foreign", "missing"] {
        #expect(throws: Checkpoint.CheckpointError.self, "\(name)") { _ = try Checkpoint.read(dir + "/" + name, into: try state(0)) }
    }
    let otherModel = try SharedState(specs: [TensorSpec(name: "theta", dtype: .f32, shape: [10])])
    #expect(throws: Checkpoint.CheckpointError.self) { _ = try Checkpoint.read(path, into: otherModel) }
}

@Test func aFailedWriteKeepsThePreviousCheckpoint() throws {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let path = dir + "/peer.ckpt"
    let first = try state(0.5)
    try Checkpoint.write(first, to: path)
    // A directory cannot be written into once it is read-only (root ignores modes, so instead
    // point the write at a path whose directory does not exist).
    #expect(throws: Checkpoint.CheckpointError.self) { try Checkpoint.write(try state(2), to: dir + "/missing/peer.ckpt") }
    let restored = try state(0)
    _ = try Checkpoint.read(path, into: restored)
    #expect(restored.digest() == first.digest())
}

/// A checkpoint written before the shared state had a lineage (θ and the momentum only) still
/// resumes: the tensors and the revision are taken, the lineage is blank.
@Test func aCheckpointWithoutLineageStillResumes() throws {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let path = dir + "/old.ckpt"
    let old = try state(0.25)
    try Checkpoint.write(old, local: [9], to: path)
    let current = try SharedState(specs: old.specs + [Lineage.spec])
    current.lineage = Lineage(line: 3, peerSteps: 4)
    let local = try Checkpoint.readAnyVersion(path, into: current)
    #expect(local == [9] && current.revision == 5)
    #expect(Array(current.floats("theta")!) == Array(old.floats("theta")!))
    #expect(Array(current.floats("momentum")!) == Array(old.floats("momentum")!))
    #expect(current.lineage == Lineage())
    // A file of neither layout is still refused.
    try Data("not a checkpoint".utf8).write(to: URL(fileURLWithPath: dir + "/bad.ckpt"))
    #expect(throws: (any Error).self) { try Checkpoint.readAnyVersion(dir + "/bad.ckpt", into: current) }
}
