import Foundation
import Transport

/// A CA with two nodes, a foreign CA with one, and an expired certificate of the right CA,
/// made with the `openssl` command (as docs/operations.md tells operators to).
public final class TestCertificates: @unchecked Sendable {
    public let dir: String

    public init() throws {
        dir = NSTemporaryDirectory() + "peernode-tls-\(UInt64.random(in: 1...UInt64.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try authority("ca")
        try authority("foreign-ca")
        try node("a", ca: "ca")
        try node("b", ca: "ca")
        try node("stranger", ca: "foreign-ca")
        try node("expired", ca: "ca", days: -1)
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    public func context(_ name: String, ca: String = "ca") throws -> TLSContext {
        try TLSContext(certificate: "\(dir)/\(name).pem", privateKey: "\(dir)/\(name).key", authority: "\(dir)/\(ca).pem")
    }

    private func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        process.currentDirectoryURL = URL(fileURLWithPath: dir)
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw CertificateError(command: arguments.joined(separator: " ")) }
    }

    private func authority(_ name: String) throws {
        try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "\(name).key",
                     "-out", "\(name).pem", "-days", "30", "-subj", "/CN=\(name)"])
    }

    private func node(_ name: String, ca: String, days: Int = 30) throws {
        try openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "\(name).key",
                     "-out", "\(name).csr", "-subj", "/CN=peernode-\(name)"])
        try openssl(["x509", "-req", "-in", "\(name).csr", "-CA", "\(ca).pem", "-CAkey", "\(ca).key", "-CAcreateserial",
                     "-out", "\(name).pem", "-days", "\(days)"])
    }

    /// The PEM files of `name`: certificate, key, and the CA that signed it (`ca` by default).
    public func files(_ name: String, ca: String = "ca") -> (certificate: String, key: String, authority: String) {
        ("\(dir)/\(name).pem", "\(dir)/\(name).key", "\(dir)/\(ca).pem")
    }
}

struct CertificateError: Error, CustomStringConvertible {
    var command: String
    var description: String { "openssl \(command) failed" }
}
