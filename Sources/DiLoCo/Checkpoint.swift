import Collectives
import CZstd
import Foundation

/// Checkpoints of a peer: its copy of the shared state plus a local blob (its own optimizer
/// state), zstd-compressed, written atomically (write, fsync, rename, fsync of the directory), so
/// that a crash or a full disk at any moment leaves the previous checkpoint intact.
///
/// ```
/// "PNCKPT01"                 8 bytes
/// state digest               32 bytes (SHA-256 of the state's canonical encoding)
/// state size                 u64 LE (canonical encoding, uncompressed)
/// local size                 u64 LE (uncompressed)
/// compressed size            u64 LE
/// zstd frame                 state encoding followed by the local blob
/// ```
public enum Checkpoint {
    static let magic = Array("PNCKPT01".utf8)
    static let headerSize = 8 + 32 + 8 * 3

    public struct CheckpointError: Error, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    /// Writes `state` and `local` to `path` atomically.
    public static func write(_ state: SharedState, local: [UInt8] = [], to path: String, level: Int32 = 1) throws {
        let stateSize = state.encodedSize
        let plain = UnsafeMutableRawBufferPointer.allocate(byteCount: max(stateSize + local.count, 1), alignment: 64)
        defer { plain.deallocate() }
        state.read(0..<stateSize, into: plain.baseAddress!)
        local.withUnsafeBytes { if !$0.isEmpty { (plain.baseAddress! + stateSize).copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
        let plainSize = stateSize + local.count
        let bound = ZSTD_compressBound(plainSize)
        let file = UnsafeMutableRawBufferPointer.allocate(byteCount: headerSize + bound, alignment: 64)
        defer { file.deallocate() }
        let compressed = ZSTD_compress(file.baseAddress! + headerSize, bound, plain.baseAddress!, plainSize, level)
        if ZSTD_isError(compressed) != 0 {
            throw CheckpointError("zstd compression failed: \(String(cString: ZSTD_getErrorName(compressed)))")
        }
        var header = magic + state.digest().bytes
        for v in [UInt64(stateSize), UInt64(local.count), UInt64(compressed)] {
            withUnsafeBytes(of: v.littleEndian) { header += $0 }
        }
        header.withUnsafeBytes { file.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: headerSize) }
        try atomicWrite(UnsafeRawBufferPointer(rebasing: file[0..<(headerSize + compressed)]), to: path)
    }

    /// Loads a checkpoint into `state` (same layout required) after checking its digest, and
    /// returns the local blob. On any error `state` may hold partial data: callers load into a
    /// scratch state and copy on success.
    /// Reads `path` into `state`, also when the file predates the state's `lineage` tensor (a
    /// checkpoint of θ and the momentum only): θ, the momentum and the revision are taken, the
    /// lineage stays blank. Returns the local blob.
    public static func readAnyVersion(_ path: String, into state: SharedState) throws -> [UInt8] {
        do {
            return try read(path, into: state)
        } catch let current {
            guard state.index(of: Lineage.spec.name) != nil,
                  let legacy = try? SharedState(specs: state.specs.filter { $0.name != Lineage.spec.name }),
                  let local = try? read(path, into: legacy) else { throw current }
            for spec in legacy.specs {
                state.bytes(spec.name)!.copyMemory(from: UnsafeRawBufferPointer(legacy.bytes(spec.name)!))
            }
            state.lineage = Lineage()
            state.setRevision(legacy.revision)
            return local
        }
    }

    public static func read(_ path: String, into state: SharedState, maxLocalBytes: Int = 1 << 30) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CheckpointError("cannot read checkpoint \(path)")
        }
        return try data.withUnsafeBytes { raw -> [UInt8] in
            guard raw.count >= headerSize, Array(raw[0..<8]) == magic else {
                throw CheckpointError("\(path) is not a peernode checkpoint")
            }
            let digest = Digest(bytes: Array(raw[8..<40]))
            func u64(_ at: Int) -> Int { Int(clamping: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt64.self))) }
            let stateSize = u64(40), localSize = u64(48), compressedSize = u64(56)
            guard stateSize == state.encodedSize else {
                throw CheckpointError("\(path) holds a state of \(stateSize) bytes; this model's state has \(state.encodedSize)")
            }
            guard localSize <= maxLocalBytes, compressedSize == raw.count - headerSize else {
                throw CheckpointError("\(path) is truncated or corrupt (sizes do not match the file)")
            }
            let plainSize = stateSize + localSize
            let frameSize = ZSTD_getFrameContentSize(raw.baseAddress! + headerSize, compressedSize)
            guard frameSize == UInt64(plainSize) else { throw CheckpointError("\(path) is corrupt (zstd frame size)") }
            let plain = UnsafeMutableRawBufferPointer.allocate(byteCount: max(plainSize, 1), alignment: 64)
            defer { plain.deallocate() }
            let n = ZSTD_decompress(plain.baseAddress!, plainSize, raw.baseAddress! + headerSize, compressedSize)
            guard ZSTD_isError(n) == 0, n == plainSize else { throw CheckpointError("\(path) is corrupt (zstd)") }
            do {
                try state.write(0..<stateSize, from: plain.baseAddress!)
            } catch {
                throw CheckpointError("\(path) does not fit this model: \(error)")
            }
            guard state.digest() == digest else {
                throw CheckpointError("\(path) failed its digest check: the file is corrupt")
            }
            return Array(UnsafeRawBufferPointer(rebasing: plain[stateSize..<plainSize]))
        }
    }

    /// write + fsync to a temporary file in the same directory, rename over `path`, fsync the
    /// directory. The temporary file is removed on failure (e.g. ENOSPC), `path` untouched.
    static func atomicWrite(_ bytes: UnsafeRawBufferPointer, to path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent
        let temporary = "\(path).tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CheckpointError("cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var written = 0
        while written < bytes.count {
            let n = Foundation.write(fd, bytes.baseAddress! + written, bytes.count - written)
            if n < 0 {
                if errno == EINTR { continue }
                let reason = String(cString: strerror(errno))
                close(fd)
                unlink(temporary)
                throw CheckpointError("writing checkpoint \(path) failed: \(reason); the previous checkpoint is kept")
            }
            written += n
        }
        guard fsync(fd) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            unlink(temporary)
            throw CheckpointError("fsync of checkpoint \(path) failed: \(reason); the previous checkpoint is kept")
        }
        close(fd)
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw CheckpointError("cannot move checkpoint into place at \(path): \(reason)")
        }
        let dirFd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirFd >= 0 {
            _ = fsync(dirFd)
            close(dirFd)
        }
    }
}
