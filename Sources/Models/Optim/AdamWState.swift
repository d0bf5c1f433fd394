import Foundation

/// AdamW's own state as bytes, for a peer's checkpoint: the moments and the step count are each
/// peer's own (DiLoCo shares θ, not the inner optimizer), so without them a restarted peer would
/// begin its next inner steps with cold moments and, with warmup, a tiny learning rate.
///
/// ```
/// "PNADAMW1"   8 bytes
/// step         u64 LE
/// count        u64 LE (parameters)
/// m            count × f32 LE
/// v            count × f32 LE
/// ```
extension AdamW {
    public struct StateError: Error, CustomStringConvertible {
        public var description: String
    }

    private static let stateMagic = Array("PNADAMW1".utf8)

    public func encodedState() -> [UInt8] {
        let n = store.count
        var out = Self.stateMagic
        out.reserveCapacity(24 + 8 * n)
        withUnsafeBytes(of: UInt64(step).littleEndian) { out += $0 }
        withUnsafeBytes(of: UInt64(n).littleEndian) { out += $0 }
        for moment in [firstMoment, secondMoment] {
            let values = UnsafeBufferPointer(start: moment.base, count: n)
            #if _endian(little)
            out.append(contentsOf: UnsafeRawBufferPointer(values))  // already the wire layout
            #else
            for x in values { withUnsafeBytes(of: x.bitPattern.littleEndian) { out += $0 } }
            #endif
        }
        return out
    }

    /// Restores what ``encodedState()`` wrote; on any error nothing changes.
    public func restoreState(_ bytes: [UInt8]) throws {
        let n = store.count
        guard bytes.count >= 24, Array(bytes[0..<8]) == Self.stateMagic else {
            throw StateError(description: "not an AdamW state")
        }
        func u64(_ at: Int) -> UInt64 {
            bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }
        }
        guard u64(16) == UInt64(n), bytes.count == 24 + 8 * n else {
            throw StateError(description: "the AdamW state is for \(u64(16)) parameters; this model has \(n)")
        }
        guard let restoredStep = Int(exactly: u64(8)) else { throw StateError(description: "the AdamW step count is out of range") }
        bytes.withUnsafeBytes { raw in
            for (k, moment) in [firstMoment, secondMoment].enumerated() {
                let offset = 24 + 4 * n * k
                for i in 0..<n {
                    moment.base[i] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 4 * i, as: UInt32.self)))
                }
            }
        }
        step = restoredStep
    }
}
