@testable import Collectives

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny seeded generator, so that test inputs are the
/// same on every platform and Swift version (the system RNG is not).
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

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
