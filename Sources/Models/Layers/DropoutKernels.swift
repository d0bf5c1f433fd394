/// A reusable byte buffer for dropout masks (grows only).
final class ByteMask {
    private(set) var base = UnsafeMutablePointer<UInt8>.allocate(capacity: 16)
    private var capacity = 16
    private(set) var count = 0
    /// Whether the last fill was a random draw (training) rather than all-ones: recorded in
    /// the byte after the mask by `DropoutKernels.drawAndApply`.
    var drawn: Bool { base[count] == 1 }

    deinit { base.deallocate() }

    /// Resizes to `n` bytes; the byte after the mask records whether it was drawn.
    func resize(_ n: Int) -> UnsafeMutablePointer<UInt8> {
        if n + 1 > capacity {
            base.deallocate()
            capacity = max(n + 1, capacity * 3 / 2)
            base = .allocate(capacity: capacity)
        }
        count = n
        base[n] = 0
        return base
    }
}

/// Branch-free mask kernels: a data-dependent branch would mispredict half the time at rate 0.5.
enum DropoutKernels {
    /// Draws keep bits (probability 1 − rate, four 16-bit uniforms per 64-bit draw, so the rate
    /// has a resolution of 1/65536) into `mask` and writes y = x · keep / (1 − rate).
    @inline(never)
    static func drawAndApply(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ mask: UnsafeMutablePointer<UInt8>,
                             _ n: Int, rate: Float, rng: inout Xoshiro256) {
        let keepBits = (1 / (1 - rate)).bitPattern
        let threshold = UInt64(min((Double(rate) * 65536).rounded(), 65536))
        // The wrapping difference has its top bit set exactly when the draw is below the
        // threshold (dropped); `kept` is then 0, and 0 &- kept selects all or no bits of the scale.
        @inline(__always) func one(_ i: Int, _ r: UInt64) {
            let kept = UInt32(truncatingIfNeeded: (((r & 0xFFFF) &- threshold) >> 63) ^ 1)
            mask[i] = UInt8(truncatingIfNeeded: kept)
            y[i] = x[i] * Float(bitPattern: keepBits & (0 &- kept))
        }
        var i = 0
        while i &+ 4 <= n {
            let r = rng.next()
            one(i, r); one(i &+ 1, r >> 16); one(i &+ 2, r >> 32); one(i &+ 3, r >> 48)
            i &+= 4
        }
        if i < n {
            var r = rng.next()
            while i < n { one(i, r); r >>= 16; i &+= 1 }
        }
        mask[n] = 1
    }

    /// dx = dy · mask · scale.
    @inline(never)
    static func apply(_ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, _ mask: UnsafePointer<UInt8>,
                      _ n: Int, scale: Float) {
        let bits = scale.bitPattern
        var i = 0
        while i < n {
            dx[i] = dy[i] * Float(bitPattern: bits & (0 &- UInt32(mask[i])))
            i &+= 1
        }
    }
}
