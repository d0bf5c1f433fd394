import DiLoCo
import Foundation
import Models
import Testing

/// `peernode export` and `--init-from` against the reference safetensors implementation (the
/// `safetensors` Python package, installed by scripts/install-deps.sh): the reference reads our
/// export bit for bit, and files the reference writes are taken bit for bit or refused clearly.
@Suite(.serialized) struct WeightsProcessTests {
    static let env = ["PEERNODE_CLUSTER_KEY": "integration-test-cluster-key-0123456789"]

    /// Runs `python3 -c script args...`; the reference package missing is a failure that says
    /// how to install it, not a skip.
    static func python(_ script: String, _ args: [String]) throws -> ProcessResult {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script] + args
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return ProcessResult(status: process.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
                             stderr: String(decoding: e, as: UTF8.self))
    }

    static func requireReference() throws {
        let probe = try python("import numpy, safetensors.numpy", [])
        try #require(probe.status == 0, "python3 with numpy and safetensors is needed (scripts/install-deps.sh installs them): \(probe.stderr)")
    }

    static func directory() throws -> String {
        let dir = NSTemporaryDirectory() + "peernode-weights-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// The layout the reference script checks against: name, offset in θ, shape.
    static func writeLayout(_ infos: [ParameterInfo], to path: String) throws {
        let entries = infos.map { ["name": $0.name, "offset": $0.offset, "shape": $0.shape] as [String: Any] }
        try JSONSerialization.data(withJSONObject: entries).write(to: URL(fileURLWithPath: path))
    }

    static func bits(_ floats: some Collection<Float>) -> [UInt32] { floats.map(\.bitPattern) }

    @Test func referenceReadsTheExportBitForBit() throws {
        try Self.requireReference()
        let dir = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let run = try runPeernode(["run", "--model", "moe", "--inner-steps", "3", "--outer-steps", "2", "--no-status",
                                   "--checkpoint", dir + "/c.ckpt"], environment: Self.env)
        try #require(run.status == 0, "\(run.stderr)")
        let export = try runPeernode(["export", "--checkpoint", dir + "/c.ckpt", "--out", dir + "/m.safetensors", "--model", "moe"])
        try #require(export.status == 0, "\(export.stderr)")
        #expect(export.stdout.contains("37 tensors, 137930 parameters"), "\(export.stdout)")

        // What the file must hold: θ of the checkpoint, read with the library.
        let task = try TrainingTask.make(TaskSpec(model: .moe))
        let state = try DiLoCoTrainer.sharedState(for: task)
        let initial = Self.bits(state.floats("theta")!)
        _ = try Checkpoint.read(dir + "/c.ckpt", into: state)
        let theta = state.floats("theta")!
        #expect(Self.bits(theta) != initial, "two outer steps left θ as it was")
        try Data(buffer: UnsafeBufferPointer(theta)).write(to: URL(fileURLWithPath: dir + "/theta.f32"))
        try Self.writeLayout(task.parameters.infos, to: dir + "/layout.json")

        let check = try Self.python("""
            import json, sys, numpy as np
            from safetensors import safe_open
            from safetensors.numpy import load_file
            path, raw, layout = sys.argv[1:4]
            tensors = load_file(path)
            theta = np.fromfile(raw, dtype="<u4")
            layout = json.load(open(layout))
            assert sorted(tensors) == sorted(e["name"] for e in layout), ("names", sorted(tensors))
            for e in layout:
                t = tensors[e["name"]]
                assert t.dtype == np.float32 and list(t.shape) == e["shape"], (e["name"], t.dtype, t.shape)
                want = theta[e["offset"]:e["offset"] + t.size]
                got = np.ascontiguousarray(t).reshape(-1).view("<u4")
                assert np.array_equal(got, want), (e["name"], int(np.sum(got != want)))
            with safe_open(path, "np") as f:
                print(json.dumps(f.metadata(), sort_keys=True))
            print("ok", len(layout))
            """, [dir + "/m.safetensors", dir + "/theta.f32", dir + "/layout.json"])
        #expect(check.status == 0, "\(check.stderr)")
        #expect(check.stdout.contains("{\"dataset\": \"digits\", \"model\": \"moe\", \"revision\": \"2\"}"), "\(check.stdout)")
        #expect(check.stdout.contains("ok 37"), "\(check.stdout)")

        // A checkpoint of one model is not exported as another's.
        let wrong = try runPeernode(["export", "--checkpoint", dir + "/c.ckpt", "--out", dir + "/g.safetensors", "--model", "gcn"])
        #expect(wrong.status != 0)
        #expect(wrong.stderr.contains("cannot export") && wrong.stderr.contains("92231 parameters"), "\(wrong.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/g.safetensors"))
    }

    @Test func filesTheReferenceWritesAreTakenOrRefused() throws {
        try Self.requireReference()
        let dir = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let task = try TrainingTask.make(TaskSpec(model: .moe, seed: 5))
        try Self.writeLayout(task.parameters.infos, to: dir + "/layout.json")
        // The reference writes weights of the model's layout with awkward values, the raw bits
        // it meant in parameter order, and variants with one thing wrong each.
        let write = try Self.python("""
            import json, sys, numpy as np
            from safetensors.numpy import save_file
            d = sys.argv[1]
            layout = json.load(open(d + "/layout.json"))
            rng = np.random.default_rng(7)
            tensors, flat = {}, []
            for e in layout:
                bits = rng.integers(0, 2**32, size=int(np.prod(e["shape"])), dtype=np.uint64).astype(np.uint32)
                bits[:4] = [0x80000000, 0x00000001, 0x7F800000, 0x7FC01234][:len(bits[:4])]
                tensors[e["name"]] = bits.view(np.float32).reshape(e["shape"])
                flat.append(bits)
            np.concatenate(flat).astype("<u4").tofile(d + "/expected.u32")
            save_file(tensors, d + "/ref.safetensors", metadata={"written_by": "reference"})
            finite = {k: (rng.standard_normal(v.shape) * 0.1).astype(np.float32) for k, v in tensors.items()}
            save_file(finite, d + "/finite.safetensors")
            bad = dict(tensors); bad["moe.head.weight"] = np.ascontiguousarray(bad["moe.head.weight"].T)
            save_file(bad, d + "/shape.safetensors")
            bad = dict(tensors); bad["moe.head.bias"] = bad["moe.head.bias"].astype(np.float64)
            save_file(bad, d + "/dtype.safetensors")
            bad = dict(tensors); del bad["moe.block0.router"]
            save_file(bad, d + "/missing.safetensors")
            """, [dir])
        try #require(write.status == 0, "\(write.stderr)")

        let (flat, metadata) = try ModelWeights.read(dir + "/ref.safetensors", infos: task.parameters.infos)
        let expected = try Data(contentsOf: URL(fileURLWithPath: dir + "/expected.u32")).withUnsafeBytes {
            Array($0.bindMemory(to: UInt32.self)).map { UInt32(littleEndian: $0) }
        }
        let same = Self.bits(flat) == expected
        #expect(same, "the reference's file did not read back as the bits it wrote")
        #expect(metadata == ["written_by": "reference"])

        let good = try runPeernode(["train", "--model", "moe", "--steps", "1", "--init-from", dir + "/finite.safetensors"])
        #expect(good.status == 0, "\(good.stderr)")
        #expect(good.stdout.contains("weights from \(dir)/finite.safetensors"), "\(good.stdout)")
        for (file, message) in [("ref", "holds inf at element 2; training cannot start from non-finite weights"),
                                ("shape", "tensor 'moe.head.weight' has shape [10, 64], the model needs [64, 10]"),
                                ("dtype", "tensor 'moe.head.bias' is F64, the model needs F32"),
                                ("missing", "missing tensor 'moe.block0.router'")] {
            let train = try runPeernode(["train", "--model", "moe", "--steps", "1", "--init-from", "\(dir)/\(file).safetensors"])
            #expect(train.status != 0, "\(file)")
            #expect(train.stderr.contains(message) && train.stderr.split(separator: "\n").count == 1, "\(file): \(train.stderr)")
            let run = try runPeernode(["run", "--model", "moe", "--outer-steps", "1", "--no-status",
                                       "--init-from", "\(dir)/\(file).safetensors"], environment: Self.env)
            #expect(run.status != 0, "\(file)")
            #expect(run.stderr.contains("cannot start from the weights") && run.stderr.contains(message), "\(file): \(run.stderr)")
        }
    }
}
