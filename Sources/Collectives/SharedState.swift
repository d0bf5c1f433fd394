import Synchronization

/// The name, element type and shape of one tensor of the shared state.
public struct TensorSpec: Hashable, Sendable, Codable {
    public var name: String
    public var dtype: DType.RawValue
    public var shape: [Int]

    public init(name: String, dtype: DType, shape: [Int]) {
        self.name = name
        self.dtype = dtype.rawValue
        self.shape = shape
    }

    public var type: DType { DType(rawValue: dtype)! }
    public var elementCount: Int { shape.reduce(1, *) }
    public var byteCount: Int { elementCount * type.size }
}

/// What every member of a run must hold bit-identically: named tensors plus a revision that grows
/// by exactly one per outer step (DESIGN.md, "The step model").
///
/// Two peers are in bit-parity exactly when their ``digest()`` values are equal. The digest is
/// SHA-256 over the canonical encoding, which is also what a joiner downloads:
///
/// ```
/// "PNSTATE1"                       8 bytes
/// revision                         u64 little-endian
/// tensor count                     u32 LE
/// per tensor, in name order:       name length u16 LE, name UTF-8, dtype u8, rank u8,
///                                  dims u64 LE × rank, byte count u64 LE
/// then every tensor's bytes, in the same order (little-endian elements)
/// ```
public final class SharedState: @unchecked Sendable {
    public let specs: [TensorSpec]
    /// Atomic: status readers and tests may read it while the trainer advances it.
    private let revisionValue: Atomic<UInt64>
    public var revision: UInt64 { revisionValue.load(ordering: .acquiring) }
    private let buffers: [UnsafeMutableRawBufferPointer]
    /// Encoding of everything before the tensor bytes, for the current revision. Raw memory of a
    /// fixed size (only the revision bytes ever change), not an array: a download writes disjoint
    /// ranges from one thread per donor, and an array property read by one while another writes
    /// it is a data race on its storage (copy-on-write, retain/release) that corrupts the heap.
    private let header: UnsafeMutableRawBufferPointer
    /// Where the revision sits in the header.
    private static let revisionBytes = 8..<16

    public struct LayoutError: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// Zero-filled tensors. Specs are put in name order; names must be unique.
    public init(specs: [TensorSpec], revision: UInt64 = 0) throws {
        let sorted = specs.sorted { $0.name < $1.name }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.name == b.name {
            throw LayoutError(description: "tensor name '\(a.name)' appears twice")
        }
        for spec in sorted {
            guard DType(rawValue: spec.dtype) != nil, spec.shape.allSatisfy({ $0 >= 0 }), spec.shape.count <= 255,
                  spec.name.utf8.count <= Int(UInt16.max) else {
                throw LayoutError(description: "invalid tensor spec '\(spec.name)'")
            }
        }
        self.specs = sorted
        revisionValue = Atomic(revision)
        buffers = sorted.map { spec in
            let b = UnsafeMutableRawBufferPointer.allocate(byteCount: max(spec.byteCount, 1), alignment: 64)
            b.initializeMemory(as: UInt8.self, repeating: 0)
            return UnsafeMutableRawBufferPointer(rebasing: b[0..<spec.byteCount])
        }
        let encoded = Self.encodeHeader(specs: sorted, revision: revision)
        header = .allocate(byteCount: encoded.count, alignment: 8)
        header.copyBytes(from: encoded)
    }

    deinit {
        for b in buffers { b.baseAddress.map { UnsafeMutableRawPointer($0).deallocate() } }
        header.deallocate()
    }

    public func setRevision(_ revision: UInt64) {
        revisionValue.store(revision, ordering: .releasing)
        header.storeBytes(of: revision.littleEndian, toByteOffset: Self.revisionBytes.lowerBound, as: UInt64.self)
    }

    public func index(of name: String) -> Int? { specs.firstIndex { $0.name == name } }

    /// The bytes of tensor `name` (nil if there is none).
    public func bytes(_ name: String) -> UnsafeMutableRawBufferPointer? {
        index(of: name).map { buffers[$0] }
    }

    /// The elements of an f32 tensor.
    public func floats(_ name: String) -> UnsafeMutableBufferPointer<Float>? {
        guard let i = index(of: name), specs[i].type == .f32 else { return nil }
        return buffers[i].bindMemory(to: Float.self)
    }

    // MARK: Canonical encoding

    public var encodedSize: Int { header.count + buffers.reduce(0) { $0 + $1.count } }
    /// Offset of the tensor bytes within the encoding; everything before depends only on the
    /// layout and the revision.
    public var headerSize: Int { header.count }

    /// SHA-256 of the canonical encoding, streamed (no copy of the state).
    public func digest() -> Digest {
        var builder = DigestBuilder()
        builder.update(UnsafeRawBufferPointer(header))
        for b in buffers { builder.update(UnsafeRawBufferPointer(b)) }
        return builder.finish()
    }

    /// Copies bytes `range` of the canonical encoding into `out` (a donor serving a range).
    public func read(_ range: Range<Int>, into out: UnsafeMutableRawPointer) {
        precondition(range.lowerBound >= 0 && range.upperBound <= encodedSize)
        forEachPiece(of: range) { piece, offsetInRange, isHeader, source in
            if isHeader {
                out.advanced(by: offsetInRange).copyMemory(from: header.baseAddress! + piece.lowerBound, byteCount: piece.count)
            } else {
                out.advanced(by: offsetInRange).copyMemory(from: source! + piece.lowerBound, byteCount: piece.count)
            }
        }
    }

    /// Writes bytes `range` of a received canonical encoding into this state. The header part
    /// must match this state's layout (the revision may differ; it is taken from the bytes).
    public func write(_ range: Range<Int>, from bytes: UnsafeRawPointer) throws {
        guard range.lowerBound >= 0, range.upperBound <= encodedSize else {
            throw LayoutError(description: "range \(range) outside the state's \(encodedSize) bytes")
        }
        var headerError: LayoutError?
        var wroteRevision = false
        forEachPiece(of: range) { piece, offsetInRange, isHeader, target in
            if isHeader {
                for i in piece where !Self.revisionBytes.contains(i) {
                    if header[i] != bytes.load(fromByteOffset: offsetInRange + i - piece.lowerBound, as: UInt8.self) {
                        headerError = LayoutError(description: "the received state has a different layout (byte \(i) of the header differs)")
                        return
                    }
                }
                for i in piece where Self.revisionBytes.contains(i) {
                    header[i] = bytes.load(fromByteOffset: offsetInRange + i - piece.lowerBound, as: UInt8.self)
                    wroteRevision = true
                }
            } else {
                (target! + piece.lowerBound).copyMemory(from: bytes + offsetInRange, byteCount: piece.count)
            }
        }
        if let headerError { throw headerError }
        // Only the writer of the revision bytes updates the property: concurrent writers of other
        // ranges must not store to it.
        if wroteRevision {
            let bytes = header.loadUnaligned(fromByteOffset: Self.revisionBytes.lowerBound, as: UInt64.self)
            revisionValue.store(UInt64(littleEndian: bytes), ordering: .releasing)
        }
    }

    /// Copies everything (layout must match) from another state: a local snapshot or restore.
    public func copy(from other: SharedState) throws {
        guard other.specs == specs else { throw LayoutError(description: "the states have different layouts") }
        for (dst, src) in zip(buffers, other.buffers) where dst.count > 0 {
            dst.baseAddress!.copyMemory(from: src.baseAddress!, byteCount: src.count)
        }
        setRevision(other.revision)
    }

    /// Visits the parts of `range`: (piece range within the part, offset of the piece within
    /// `range`, whether the part is the header, base address of the tensor part).
    private func forEachPiece(of range: Range<Int>,
                              _ body: (Range<Int>, Int, Bool, UnsafeMutableRawPointer?) -> Void) {
        var start = 0
        let parts: [(Int, UnsafeMutableRawPointer?)] = [(header.count, nil)] + buffers.map { ($0.count, $0.baseAddress) }
        for (index, (length, base)) in parts.enumerated() {
            let part = start..<(start + length)
            let overlap = part.clamped(to: range)
            if !overlap.isEmpty {
                body((overlap.lowerBound - start)..<(overlap.upperBound - start), overlap.lowerBound - range.lowerBound,
                     index == 0, base)
            }
            start += length
        }
    }

    static func encodeHeader(specs: [TensorSpec], revision: UInt64) -> [UInt8] {
        var out: [UInt8] = Array("PNSTATE1".utf8)
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        put(revision)
        put(UInt32(specs.count))
        for spec in specs {
            let name = Array(spec.name.utf8)
            put(UInt16(name.count))
            out += name
            put(spec.dtype)
            put(UInt8(spec.shape.count))
            for d in spec.shape { put(UInt64(d)) }
            put(UInt64(spec.byteCount))
        }
        return out
    }
}
