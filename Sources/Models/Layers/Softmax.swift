import Foundation

/// Row softmax helpers shared by the router and tests.
public enum Softmax {
    @inline(__always)
    public static func row(_ z: UnsafePointer<Float>, into p: UnsafeMutablePointer<Float>, _ n: Int) {
        var m = z[0]
        for j in 1..<n where z[j] > m { m = z[j] }
        var s: Float = 0
        for j in 0..<n { let v = expf(z[j] - m); p[j] = v; s += v }
        let inv = 1 / s
        for j in 0..<n { p[j] *= inv }
    }

    /// In place: g ← p ⊙ (g − Σ p·g), the softmax Jacobian-vector product.
    @inline(__always)
    public static func backwardRow(_ p: UnsafePointer<Float>, _ g: UnsafeMutablePointer<Float>, _ n: Int) {
        var dot: Float = 0
        for j in 0..<n { dot += p[j] * g[j] }
        for j in 0..<n { g[j] = p[j] * (g[j] - dot) }
    }
}
