@testable import Collectives

import PeerTestSupport

extension SplitMix64 {
    /// A float in [-8, 8): a 24-bit signed integer times 2⁻²⁰, exactly representable.
    mutating func nextFloat() -> Float {
        Float(Int64(bitPattern: next()) >> 40) * 0x1p-20
    }
}

func hex(_ bytes: some Sequence<UInt8>) -> String {
    bytes.map { b in
        let s = String(b, radix: 16)
        return s.count == 1 ? "0" + s : s
    }.joined()
}

func hexBits(_ floats: [Float]) -> [String] {
    floats.map { f in
        let s = String(f.bitPattern, radix: 16)
        return String(repeating: "0", count: 8 - s.count) + s
    }
}
