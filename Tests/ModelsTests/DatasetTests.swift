import Foundation
import Testing
@testable import Models

/// Shipped datasets load with the documented counts; loaders turn missing, truncated and
/// corrupt files into `DatasetError`s naming the file (and line), never a crash.
@Suite struct DatasetTests {
    /// A scratch copy of the shipped Cora, unpacked into its four text files, that a test may damage.
    static func scratchCora() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("peernode-cora-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for (name, bytes) in try PlanetoidDataset.shippedFiles("cora") {
            try Data(bytes).write(to: dir.appendingPathComponent(name))
        }
        return dir
    }

    static func expectError(_ kind: DatasetError.Kind, file: String, line: Int? = nil,
                            sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
        do {
            try body()
            Issue.record("expected a \(kind.rawValue) error for \(file)", sourceLocation: sourceLocation)
        } catch let e as DatasetError {
            #expect(e.kind == kind, "\(e)", sourceLocation: sourceLocation)
            #expect(e.file.hasSuffix(file), "\(e)", sourceLocation: sourceLocation)
            if let line { #expect(e.line == line, "\(e)", sourceLocation: sourceLocation) }
            #expect(e.description.contains(file), sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func shippedMolecules() throws {
        let esol = try MoleculeDataset.load("esol")
        #expect(esol.molecules.count == 1128)
        #expect([DataSplit.train, .validation, .test].map { esol.indices($0).count } == [902, 113, 113])
        #expect(esol.molecules[0].atomCount == 32 && esol.molecules[0].atoms.count == 32 * 9)
        #expect(abs(esol.molecules[0].target - -0.77) < 1e-6)
        let freesolv = try MoleculeDataset.load("freesolv")
        #expect(freesolv.molecules.count == 642)
        #expect(freesolv.indices(.train, scaffold: true).count == 513)
    }

    @Test func shippedTabular() throws {
        let digits = try TabularDataset.load("digits")
        #expect(digits.count == 1797 && digits.trainIndices.count == 1437 && digits.testIndices.count == 360)
        #expect(digits.features.allSatisfy { $0 >= 0 && $0 <= 1 })
        let mnist = try TabularDataset.load("mnist5k")
        #expect(mnist.count == 5000 && mnist.featureCount == 784)
        #expect((0..<10).allSatisfy { c in mnist.testIndices.filter { mnist.labels[$0] == c }.count == 100 })
    }

    @Test func shippedPlanetoid() throws {
        let d = try PlanetoidDataset.load("cora")
        #expect(d.nodeCount == 2708 && d.featureCount == 1433 && d.classCount == 7)
        #expect(d.features.nonZeroCount == 49216)
        #expect(d.edgeSources.count == 5278)
        #expect(d.splits[.train]?.count == 140 && d.splits[.validation]?.count == 500 && d.splits[.test]?.count == 1000)
        #expect(d.labels.prefix(3) == [3, 4, 4] && d.edgeSources[0] == 0 && d.edgeTargets[0] == 633)
        let c = try PlanetoidDataset.load("citeseer")
        #expect(c.nodeCount == 3327 && c.featureCount == 3703 && c.classCount == 6)
        #expect(c.edgeSources.count == 4552 && c.labels.filter { $0 < 0 }.count == 15)
        #expect(c.splits[.train]?.count == 120 && c.splits[.validation]?.count == 500 && c.splits[.test]?.count == 1000)
        // The same four files from a directory load to the same graph.
        let fromDirectory = try PlanetoidDataset.load("cora", directory: try Self.scratchCora().path)
        #expect(fromDirectory.labels == d.labels && fromDirectory.edgeTargets == d.edgeTargets
                && fromDirectory.features.columnIndices == d.features.columnIndices)
        Self.expectError(.unknownDataset, file: "pubmed") { _ = try PlanetoidDataset.load("pubmed") }
    }

    /// Damaged packed files: wrong first line, a section cut short, a wrong section name, bytes
    /// after the last section.
    @Test func planetoidPackRejectsDamage() throws {
        let text = "peernode-planetoid 1\nfile features.txt 2\n0 1\n\nfile labels.txt 2\n0\n1\n"
            + "file split.txt 2\ntrain\ntest\nfile edges.txt 1\n0 1\n"
        let good = Array(text.utf8)
        let sections = try PlanetoidPack.sections(good, file: "t.zst")
        #expect(sections["features.txt"] == Array("0 1\n\n".utf8) && sections["edges.txt"] == Array("0 1\n".utf8))
        func damaged(_ text: String, _ kind: DatasetError.Kind, line: Int) {
            Self.expectError(kind, file: "t.zst", line: line) { _ = try PlanetoidPack.sections(Array(text.utf8), file: "t.zst") }
        }
        damaged(text.replacingOccurrences(of: "peernode-planetoid 1", with: "planetoid 2"), .corrupt, line: 1)
        damaged(text.replacingOccurrences(of: "file labels.txt 2", with: "file label.txt 2"), .corrupt, line: 5)
        damaged(text.replacingOccurrences(of: "file edges.txt 1", with: "file edges.txt 9"), .truncated, line: 13)
        damaged(text + "0 2\n", .corrupt, line: 13)
        damaged(String(text.prefix(30)), .truncated, line: 2)
    }

    @Test func planetoidMissingFile() throws {
        let dir = try Self.scratchCora()
        try FileManager.default.removeItem(at: dir.appendingPathComponent("edges.txt"))
        Self.expectError(.missingFile, file: "edges.txt") { _ = try PlanetoidDataset.load(directory: dir.path) }
    }

    @Test func planetoidTruncatedMidLine() throws {
        let dir = try Self.scratchCora()
        let url = dir.appendingPathComponent("features.txt")
        let bytes = try Data(contentsOf: url)
        try bytes.prefix(bytes.count / 2).write(to: url)
        Self.expectError(.truncated, file: "features.txt") { _ = try PlanetoidDataset.load(directory: dir.path) }
    }

    @Test func planetoidMissingLines() throws {
        let dir = try Self.scratchCora()
        let url = dir.appendingPathComponent("split.txt")
        let lines = try String(contentsOf: url, encoding: .utf8).split(separator: "\n")
        try (lines.prefix(2000).joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
        Self.expectError(.truncated, file: "split.txt", line: 2001) { _ = try PlanetoidDataset.load(directory: dir.path) }
    }

    @Test func planetoidCorruptLines() throws {
        let dir = try Self.scratchCora()
        let labels = dir.appendingPathComponent("labels.txt")
        var lines = try String(contentsOf: labels, encoding: .utf8).split(separator: "\n").map(String.init)
        lines[4] = "x3"
        try (lines.joined(separator: "\n") + "\n").write(to: labels, atomically: true, encoding: .utf8)
        Self.expectError(.corrupt, file: "labels.txt", line: 5) { _ = try PlanetoidDataset.load(directory: dir.path) }

        let dir2 = try Self.scratchCora()
        let edges = dir2.appendingPathComponent("edges.txt")
        try ("0 1\n1 99999\n").write(to: edges, atomically: true, encoding: .utf8)
        Self.expectError(.corrupt, file: "edges.txt", line: 2) { _ = try PlanetoidDataset.load(directory: dir2.path) }
    }

    @Test func zstdRejectsGarbageAndTruncation() throws {
        let original = [UInt8]("hello, compressed world! ".utf8) + (0..<5000).map { UInt8($0 % 251) }
        let packed = Zstd.compress(original)
        #expect(try Zstd.decompress(packed, name: "ok.zst") == original)
        Self.expectError(.corrupt, file: "garbage.zst") { _ = try Zstd.decompress([1, 2, 3, 4, 5, 6, 7, 8], name: "garbage.zst") }
        Self.expectError(.truncated, file: "cut.zst") { _ = try Zstd.decompress(Array(packed.prefix(packed.count - 10)), name: "cut.zst") }
        var flipped = packed
        flipped[flipped.count / 2] ^= 0xFF
        flipped[flipped.count / 2 + 1] ^= 0xFF
        do {
            let out = try Zstd.decompress(flipped, name: "flipped.zst")
            #expect(out != original, "a damaged frame must not silently decode to the original")
        } catch let e as DatasetError {
            #expect(e.file == "flipped.zst")
        }
    }

    @Test func tabularAndMoleculeFilesFromADirectory() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("peernode-data-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try Data(repeating: 1, count: 785 * 10).write(to: dir.appendingPathComponent("mnist5k.u8"))
        Self.expectError(.truncated, file: "mnist5k.u8") { _ = try TabularDataset.load("mnist5k", directory: dir.path) }
        try ("train 3 " + Array(repeating: "1", count: 63).joined(separator: " ") + "\n")
            .write(to: dir.appendingPathComponent("digits.txt"), atomically: true, encoding: .utf8)
        Self.expectError(.corrupt, file: "digits.txt", line: 1) { _ = try TabularDataset.load("digits", directory: dir.path) }
        let esol = try DataLocator.shippedBytes("esol.jsonl")
        var lines = String(decoding: esol, as: UTF8.self).split(separator: "\n").prefix(5).map(String.init)
        lines[2] = String(lines[2].prefix(40))  // cut a record in half
        try Data(Zstd.compress([UInt8]((lines.joined(separator: "\n") + "\n").utf8)))
            .write(to: dir.appendingPathComponent("esol.jsonl.zst"))
        Self.expectError(.corrupt, file: "esol.jsonl.zst", line: 3) { _ = try MoleculeDataset.load("esol", directory: dir.path) }
        Self.expectError(.missingFile, file: "lipophilicity.jsonl") { _ = try MoleculeDataset.load("lipophilicity", directory: dir.path) }
        Self.expectError(.unknownDataset, file: "qm9") { _ = try MoleculeDataset.load("qm9") }
    }
}

extension DatasetTests {
    @Test func planetoidWithoutLabels() throws {
        let dir = try Self.scratchCora()
        try String(repeating: "-1\n", count: 2708).write(to: dir.appendingPathComponent("labels.txt"), atomically: true, encoding: .utf8)
        Self.expectError(.corrupt, file: "labels.txt") { _ = try PlanetoidDataset.load(directory: dir.path) }
    }
}
