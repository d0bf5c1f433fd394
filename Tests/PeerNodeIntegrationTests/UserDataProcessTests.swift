import Foundation
import Testing

/// `--data-dir` with a user's own files through the command line: the model is sized from the
/// files and trains; a damaged file stops the command with one line naming file, line and field.
@Test func trainAndRunTakeAUsersOwnTable() throws {
    let dir = NSTemporaryDirectory() + "peernode-usertable-\(UUID().uuidString)/iris-like"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: (dir as NSString).deletingLastPathComponent) }
    var table = "petal,sepal,label,split\n"
    for i in 0..<120 { table += "\(Double(i % 3) + Double(i % 7) / 10),\(i % 5),\(i % 3),\(i < 90 ? "train" : "test")\n" }
    try table.write(toFile: dir + "/table.csv", atomically: true, encoding: .utf8)

    let train = try runPeernode(["train", "--model", "moe", "--data-dir", dir, "--steps", "5"])
    #expect(train.status == 0, "\(train.stderr)")
    #expect(train.stdout.contains("training moe on iris-like:"), "\(train.stdout)")
    let env = ["PEERNODE_CLUSTER_KEY": "integration-test-cluster-key-0123456789"]
    let run = try runPeernode(["run", "--model", "moe", "--data-dir", dir, "--data-format", "table-csv", "--inner-steps", "2",
                               "--outer-steps", "1", "--no-status"], environment: env)
    #expect(run.status == 0, "\(run.stderr)")
    #expect(run.stdout.contains("outer revision=1 "), "\(run.stdout)")

    try (table + "1.5,2,7000,train\n").write(toFile: dir + "/table.csv", atomically: true, encoding: .utf8)
    let bad = try runPeernode(["train", "--model", "moe", "--data-dir", dir, "--steps", "5"])
    #expect(bad.status != 0)
    #expect(bad.stderr.contains("table.csv:122: field 'label': label 7000 out of range 0..<1000"), "\(bad.stderr)")
    #expect(bad.stderr.split(separator: "\n").count == 1, "\(bad.stderr)")
    let wrongFormat = try runPeernode(["run", "--model", "moe", "--data-dir", dir, "--data-format", "nodes-csv"], environment: env)
    #expect(wrongFormat.status != 0)
    #expect(wrongFormat.stderr.contains("--data-format nodes-csv is for --model gcn, not moe"), "\(wrongFormat.stderr)")
    let unknown = try runPeernode(["train", "--model", "moe", "--data-dir", dir, "--data-format", "parquet", "--steps", "1"])
    #expect(unknown.status != 0 && unknown.stderr.contains("'parquet' is invalid for '--data-format"), "\(unknown.stderr)")
    #expect(unknown.stderr.contains("table-csv"), "the refusal names the formats: \(unknown.stderr)")
}
