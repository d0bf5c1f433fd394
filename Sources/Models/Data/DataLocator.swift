import Foundation

/// Finds dataset bytes: the datasets shipped inside the module (zstd resources), or files in
/// a directory the user names.
public enum DataLocator {
    /// Names of the datasets shipped as resources of this module.
    public static let shippedDatasets = ["esol", "freesolv", "lipophilicity", "digits", "mnist5k", "cora", "citeseer"]

    /// The single-file datasets `datasetBytes` serves (Cora and CiteSeer are packed text files,
    /// read by `PlanetoidDataset`).

    static let shippedFiles: [String: String] = [
        "esol": "esol.jsonl", "freesolv": "freesolv.jsonl", "lipophilicity": "lipophilicity.jsonl",
        "digits": "digits.txt", "mnist5k": "mnist5k.u8",
    ]

    /// The raw (decompressed) bytes of a shipped dataset file, e.g. `esol.jsonl`.
    public static func shippedBytes(_ fileName: String) throws -> [UInt8] {
        let name = fileName + ".zst"
        for dir in resourceDirectories() {
            let url = dir.appendingPathComponent(name)
            if FileManager.default.fileExists(atPath: url.path) {
                return try Zstd.decompress(readFile(url), name: url.lastPathComponent)
            }
        }
        throw DatasetError(.missingFile, file: name, "not found in \(resourceDirectories().map(\.path).joined(separator: ", ")) "
                           + "(install peernode_Models.resources next to the executable)")
    }

    /// Where the shipped `.zst` files may be: the resource bundle SwiftPM puts next to the
    /// executable (or test runner), then the source tree this module was built from.
    ///
    /// `Bundle.module` would find the first, but its generated accessor calls `fatalError` when
    /// the bundle is missing (a binary copied without it); a missing dataset must be an error.
    static func resourceDirectories() -> [URL] {
        let bundleName = "peernode_Models.resources"
        var dirs = [Bundle.main.bundleURL.appendingPathComponent(bundleName).appendingPathComponent("Resources")]
        if let exe = Bundle.main.executableURL?.resolvingSymlinksInPath().deletingLastPathComponent() {
            let d = exe.appendingPathComponent(bundleName).appendingPathComponent("Resources")
            if d.path != dirs[0].path { dirs.append(d) }
        }
        // This file is <root>/Sources/Models/Data/DataLocator.swift.
        dirs.append(URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Resources"))
        return dirs
    }

    /// The bytes of dataset `name`'s main file: from `directory` when given (plain or `.zst`,
    /// directly inside it or in the sub-folder docs/datasets.md names), else shipped.
    public static func datasetBytes(_ name: String, directory: String?) throws -> (bytes: [UInt8], file: String) {
        guard let fileName = shippedFiles[name] else {
            throw DatasetError(.unknownDataset, file: name, "known: \(shippedDatasets.joined(separator: ", "))")
        }
        guard let directory else { return (try shippedBytes(fileName), "\(fileName).zst") }
        let sub = ["esol": "molecules", "freesolv": "molecules", "lipophilicity": "molecules",
                   "digits": "digits", "mnist5k": "mnist5k"][name]!
        let base = URL(fileURLWithPath: directory)
        for candidate in [base.appendingPathComponent(fileName), base.appendingPathComponent(sub).appendingPathComponent(fileName)] {
            if FileManager.default.fileExists(atPath: candidate.path) {
                return (try readFile(candidate), candidate.path)
            }
            let zst = candidate.appendingPathExtension("zst")
            if FileManager.default.fileExists(atPath: zst.path) {
                return (try Zstd.decompress(readFile(zst), name: zst.path), zst.path)
            }
        }
        throw DatasetError(.missingFile, file: base.appendingPathComponent(fileName).path,
                           "no \(fileName) (or .zst) in \(directory) or \(directory)/\(sub)")
    }

    /// Reads a whole file, mapping failures to `DatasetError`.
    public static func readFile(_ url: URL) throws -> [UInt8] {
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw DatasetError(.missingFile, file: url.path, "no such file")
        }
        do {
            return [UInt8](try Data(contentsOf: url))
        } catch {
            throw DatasetError(.missingFile, file: url.path, "unreadable: \(error.localizedDescription)")
        }
    }
}
