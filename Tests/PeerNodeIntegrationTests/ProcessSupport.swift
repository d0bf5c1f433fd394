import Foundation

/// The `peernode` binary built next to the test bundle (`swift build --build-tests` builds it).
func peernodeBinary() throws -> URL {
    var dir = Bundle.main.bundleURL
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent("peernode")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    struct Missing: Error, CustomStringConvertible {
        var description: String { "peernode binary not found next to the tests: run `swift build --build-tests` first" }
    }
    throw Missing()
}

struct ProcessResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs `peernode args...` to completion, killing it after `timeout` seconds.
func runPeernode(_ args: [String], environment: [String: String] = [:], timeout: TimeInterval = 120) throws -> ProcessResult {
    let process = Process()
    process.executableURL = try peernodeBinary()
    process.arguments = args
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let deadline = DispatchTime.now() + timeout
    let group = DispatchGroup()
    let outData = DataBox()
    let errData = DataBox()
    group.enter()
    DispatchQueue.global().async { outData.set(out.fileHandleForReading.readDataToEndOfFile()); group.leave() }
    group.enter()
    DispatchQueue.global().async { errData.set(err.fileHandleForReading.readDataToEndOfFile()); group.leave() }
    if group.wait(timeout: deadline) == .timedOut {
        process.terminate()
        kill(process.processIdentifier, SIGKILL)
    }
    process.waitUntilExit()
    group.wait()
    return ProcessResult(status: process.terminationStatus, stdout: String(decoding: outData.get(), as: UTF8.self),
                         stderr: String(decoding: errData.get(), as: UTF8.self))
}

private final class DataBox: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    func set(_ d: Data) { lock.withLock { data = d } }
    func get() -> Data { lock.withLock { data } }
}
