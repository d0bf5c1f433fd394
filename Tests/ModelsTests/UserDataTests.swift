import Foundation
import Testing
@testable import Models

/// Users' own datasets (docs/datasets.md, "Your own data"): each format, written here, sizes
/// its model from the files and trains; each kind of damage is refused with the file, the line
/// and the field.
@Suite struct UserDataTests {
    /// A fresh directory holding `files` (name → content).
    static func directory(_ files: [String: String]) throws -> String {
        let dir = NSTemporaryDirectory() + "peernode-userdata-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (name, text) in files { try text.write(toFile: dir + "/" + name, atomically: true, encoding: .utf8) }
        return dir
    }

    /// 60 nodes in 3 classes whose first two features give the class away; a ring of edges
    /// within each class.
    static func nodeFiles(splitColumn: Bool = true) -> [String: String] {
        var features = "id, a, b, c\n", labels = splitColumn ? "id,label,split\n" : "id,label\n", split = "id,split\n"
        var edges = "source,target\n"
        for i in 0..<60 {
            let c = i % 3
            features += "n\(i), \(c == 0 ? 1 : 0.1), \(c == 1 ? 1 : -0.2), \(Double(i % 7) / 7)\n"
            let s = i < 30 ? "train" : i < 45 ? "val" : "test"
            labels += splitColumn ? "n\(i),\(c),\(s)\n" : "n\(i),\(c)\n"
            split += "n\(i),\(s)\r\n"
            edges += "n\(i),n\((i + 3) % 60)\n"
        }
        edges += "n0,n0\nn3,n0\n"  // a self-loop and a duplicate: both dropped
        var files = ["features.csv": features, "labels.csv": labels, "edges.csv": edges]
        if !splitColumn { files["split.csv"] = split }
        return files
    }

    static func expectRefused(_ spec: TaskSpec, file: String, line: Int?, _ fragments: [String],
                              sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try TrainingTask.make(spec)
            Issue.record("accepted; expected an error about \(file)", sourceLocation: sourceLocation)
        } catch let e as DatasetError {
            #expect(e.file.hasSuffix(file), "\(e)", sourceLocation: sourceLocation)
            if let line { #expect(e.line == line, "\(e)", sourceLocation: sourceLocation) }
            for f in fragments { #expect(e.description.contains(f), "\(e)", sourceLocation: sourceLocation) }
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        }
    }

    static func trains(_ task: TrainingTask, steps: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        let before = task.evaluate(task.selectionSplit).loss
        for _ in 0..<steps { task.step() }
        let after = task.evaluate(task.selectionSplit).loss
        #expect(after.isFinite && after < before, "loss \(before) → \(after)", sourceLocation: sourceLocation)
    }

    @Test func nodeCSVTrainsAndSizesTheModel() throws {
        for splitColumn in [true, false] {
            let dir = try Self.directory(Self.nodeFiles(splitColumn: splitColumn))
            let task = try TrainingTask.make(TaskSpec(model: .gcn, dataDirectory: dir, seed: 1))
            #expect(task.spec.dataFormat == .nodesCSV && task.spec.dataset == URL(fileURLWithPath: dir).lastPathComponent)
            let gcn = try #require(task.model as? GCN)
            #expect(gcn.dataset.nodeCount == 60 && gcn.dataset.featureCount == 3 && gcn.dataset.classCount == 3)
            #expect(gcn.dataset.edgeSources.count == 60)
            #expect(gcn.dataset.splits[.train]?.count == 30 && gcn.dataset.splits[.test]?.count == 15)
            #expect(task.parameters.info(named: "gcn.conv1.weight")?.shape == [3, 64])
            #expect(task.parameters.info(named: "gcn.conv2.weight")?.shape == [64, 3])
            Self.trains(task, steps: 20)
        }
    }

    @Test func nodeCSVDamageIsRefused() throws {
        func spec(_ change: (inout [String: String]) -> Void, splitColumn: Bool = true) throws -> TaskSpec {
            var files = Self.nodeFiles(splitColumn: splitColumn)
            change(&files)
            return TaskSpec(model: .gcn, dataDirectory: try Self.directory(files))
        }
        Self.expectRefused(try spec { $0["features.csv"] = "1,2,3\n4,5,6\n" }, file: "features.csv", line: 1,
                           ["bad header", "column 1 is '1'"])
        Self.expectRefused(try spec { $0["labels.csv"] = "id,class\nn0,1\n" }, file: "labels.csv", line: 1,
                           ["bad header: no column 'label'"])
        Self.expectRefused(try spec { $0["features.csv"]! += "n99,1,2\n" }, file: "features.csv", line: 62,
                           ["ragged row: 3 fields, the header has 4"])
        Self.expectRefused(try spec { $0["features.csv"]! += "n99,1,x,3\n" }, file: "features.csv", line: 62,
                           ["field 'b'", "'x' is not a finite number"])
        Self.expectRefused(try spec { $0["edges.csv"]! += "n5,m7\n" }, file: "edges.csv", line: 64,
                           ["field 'target'", "unknown node id 'm7'"])
        Self.expectRefused(try spec { $0["labels.csv"] = $0["labels.csv"]!.replacingOccurrences(of: "n4,1,train", with: "n4,1000,train") },
                           file: "labels.csv", line: 6, ["field 'label'", "label 1000 out of range 0..<1000"])
        Self.expectRefused(try spec { $0["labels.csv"] = $0["labels.csv"]!.replacingOccurrences(of: "n4,1,train", with: "n4,-1,train") },
                           file: "labels.csv", line: 6, ["label -1 out of range"])
        Self.expectRefused(try spec({ $0["split.csv"] = nil }, splitColumn: false), file: "split.csv", line: nil,
                           ["missing split: no split.csv, and labels.csv has no 'split' column"])
        Self.expectRefused(try spec { $0["labels.csv"] = $0["labels.csv"]!.replacingOccurrences(of: "train", with: "none") },
                           file: "labels.csv", line: nil, ["missing split: no node in 'train'"])
        Self.expectRefused(try spec { $0["labels.csv"] = $0["labels.csv"]!.replacingOccurrences(of: "n4,1,train", with: "n4,1,training") },
                           file: "labels.csv", line: 6, ["field 'split'", "unknown split 'training'"])
        Self.expectRefused(try spec { $0["labels.csv"] = $0["labels.csv"]!.replacingOccurrences(of: "n4,1,train", with: "n4,,train") },
                           file: "labels.csv", line: 6, ["node in the train split has no label"])
        Self.expectRefused(try spec { $0["features.csv"]! += "n3,1,2,3\n" }, file: "features.csv", line: 62,
                           ["field 'id'", "node id 'n3' appears twice"])
        Self.expectRefused(try spec { $0["edges.csv"] = nil }, file: "edges.csv", line: nil, ["missing file"])
    }

    /// 200 rows, two classes separated by the first feature; a constant column.
    static func table(_ rows: Int = 200, label: (Int) -> String = { "\($0 % 2)" }, split: (Int) -> String = { $0 < 150 ? "train" : "test" }) -> String {
        var text = "x1,label,x2,constant,split\n"
        for i in 0..<rows {
            text += "\(Double(i % 2) * 40 + Double(i % 5)),\(label(i)),\(Double(i % 13) - 6),7,\(split(i))\n"
        }
        return text
    }

    @Test func tableCSVTrainsAndSizesTheModel() throws {
        let dir = try Self.directory(["table.csv": Self.table(label: { "\($0 % 2 * 3)" })])
        let task = try TrainingTask.make(TaskSpec(model: .moe, dataDirectory: dir, seed: 2))
        let moe = try #require(task.model as? MoEClassifier)
        #expect(moe.dataset.featureCount == 3 && moe.dataset.classCount == 4 && moe.dataset.trainIndices.count == 150)
        #expect(moe.dataset.features.allSatisfy { $0 >= 0 && $0 <= 1 })
        #expect(task.parameters.info(named: "moe.input.weight")?.shape == [3, 64])
        #expect(task.parameters.info(named: "moe.head.weight")?.shape == [64, 4])
        Self.trains(task, steps: 10)
    }

    @Test func tableCSVDamageIsRefused() throws {
        func spec(_ text: String) throws -> TaskSpec { TaskSpec(model: .moe, dataDirectory: try Self.directory(["table.csv": text])) }
        Self.expectRefused(try spec(Self.table().replacingOccurrences(of: ",label,", with: ",class,")), file: "table.csv", line: 1,
                           ["bad header: no column 'label'"])
        var lines = Self.table().split(separator: "\n").map(String.init)
        lines[3] = "1,0,2,train"
        Self.expectRefused(try spec(lines.joined(separator: "\n") + "\n"), file: "table.csv", line: 4, ["ragged row: 4 fields"])
        Self.expectRefused(try spec(Self.table(label: { $0 == 9 ? "12.5" : "\($0 % 2)" })), file: "table.csv", line: 11,
                           ["field 'label'", "'12.5' is not a class id"])
        Self.expectRefused(try spec(Self.table(label: { $0 == 9 ? "5000" : "\($0 % 2)" })), file: "table.csv", line: 11,
                           ["field 'label'", "label 5000 out of range"])
        Self.expectRefused(try spec(Self.table(split: { _ in "train" })), file: "table.csv", line: nil, ["missing split: no row in 'test'"])
        Self.expectRefused(try spec(Self.table(split: { $0 == 0 ? "val" : "train" })), file: "table.csv", line: 2,
                           ["field 'split'", "unknown split 'val'"])
        Self.expectRefused(try spec("x1,label,split\n"), file: "table.csv", line: nil, ["no rows after the header"])
    }

    /// Graphs in the molecule line format: a path of 2..7 atoms; regression target the atom
    /// count, class the parity of the count.
    static func graphs(count: Int = 80, record: (Int, Int) -> String? = { _, _ in nil }) -> String {
        var text = ""
        for i in 0..<count {
            let n = 2 + i % 6
            if let custom = record(i, n) { text += custom + "\n"; continue }
            let atoms = (0..<n).map { a in "[\(5 + a % 3),0,2,5,1,0,2,0,0]" }.joined(separator: ",")
            let bonds = (1..<n).map { "[\($0 - 1),\($0)]" }.joined(separator: ",")
            let split = i < 60 ? "train" : i < 70 ? "val" : "test"
            text += "{\"y\":\(n),\"num_atoms\":\(n),\"atoms\":[\(atoms)],\"bonds\":[\(bonds)],\"split\":\"\(split)\"}\n"
        }
        return text
    }

    @Test func graphsJSONLTrainForRegressionAndClassification() throws {
        let regression = try TrainingTask.make(TaskSpec(model: .gin, dataDirectory: try Self.directory(["graphs.jsonl": Self.graphs()]), seed: 3))
        #expect(regression.spec.dataFormat == .graphRegression && regression.evaluate().name == "rmse")
        #expect(regression.parameters.info(named: "gin.head.fc2.weight")?.shape == [64, 1])
        Self.trains(regression, steps: 10)

        let parity = Self.graphs().replacingOccurrences(of: "\"y\":", with: "\"y\":1").split(separator: "\n").enumerated().map { i, line in
            line.replacingOccurrences(of: "\"y\":1\(2 + i % 6)", with: "\"y\":\((2 + i % 6) % 2 * 2)")
        }.joined(separator: "\n") + "\n"
        let dir = try Self.directory(["graphs.jsonl": parity])
        let classifier = try TrainingTask.make(TaskSpec(model: .gin, dataDirectory: dir, seed: 3, dataFormat: .graphClassification))
        #expect(classifier.evaluate().name == "accuracy")
        #expect(classifier.parameters.info(named: "gin.head.fc2.weight")?.shape == [64, 3])
        Self.trains(classifier, steps: 10)
        // Without the format the same file is a regression set: the files cannot tell.
        #expect(try TrainingTask.make(TaskSpec(model: .gin, dataDirectory: dir)).spec.dataFormat == .graphRegression)
    }

    @Test func graphsJSONLDamageIsRefused() throws {
        func spec(_ text: String, _ format: DataFormat? = nil) throws -> TaskSpec {
            TaskSpec(model: .gin, dataDirectory: try Self.directory(["graphs.jsonl": text]), dataFormat: format)
        }
        let outOfRange = Self.graphs { i, n in
            i == 4 ? "{\"y\":1000,\"num_atoms\":1,\"atoms\":[[5,0,2,5,1,0,2,0,0]],\"bonds\":[],\"split\":\"train\"}" : nil
        }
        Self.expectRefused(try spec(outOfRange, .graphClassification), file: "graphs.jsonl", line: 5,
                           ["field 'y'", "label 1000 out of range 0..<1000"])
        let fraction = outOfRange.replacingOccurrences(of: "\"y\":1000,", with: "\"y\":0.5,")
        Self.expectRefused(try spec(fraction, .graphClassification), file: "graphs.jsonl", line: 5, ["field 'y'", "is not a class id"])
        let badBond = outOfRange.replacingOccurrences(of: "\"bonds\":[],", with: "\"bonds\":[[0,3]],")
        Self.expectRefused(try spec(badBond), file: "graphs.jsonl", line: 5, ["bond (0, 3) outside 0..<1"])
        let noEval = Self.graphs().replacingOccurrences(of: "\"val\"", with: "\"train\"").replacingOccurrences(of: "\"test\"", with: "\"train\"")
        Self.expectRefused(try spec(noEval), file: "graphs.jsonl", line: nil, ["missing split: no graph in 'val' or 'test'"])
        let unknownSplit = Self.graphs().replacingOccurrences(of: "\"split\":\"val\"", with: "\"split\":\"dev\"")
        Self.expectRefused(try spec(unknownSplit), file: "graphs.jsonl", line: 61, ["missing or unknown 'split'"])
    }

    @Test func formatMustFitTheModelAndTheFiles() throws {
        let dir = try Self.directory(Self.nodeFiles())
        #expect(throws: TaskError.self) { _ = try TrainingTask.make(TaskSpec(model: .moe, dataDirectory: dir, dataFormat: .nodesCSV)) }
        Self.expectRefused(TaskSpec(model: .moe, dataDirectory: dir, dataFormat: .tableCSV), file: "table.csv", line: nil,
                           ["--data-format table-csv reads table.csv"])
        #expect(throws: TaskError.self) { _ = try TrainingTask.make(TaskSpec(model: .gcn, dataFormat: .nodesCSV)) }
    }
}
