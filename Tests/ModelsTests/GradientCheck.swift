import Testing
@testable import Models

/// Seeded values in [-scale, scale), optionally pushed at least `margin` away from zero (to keep
/// finite differences off ReLU's kink).
func randomValues(_ n: Int, seed: UInt64, scale: Float = 1, margin: Float = 0) -> [Float] {
    var rng = Xoshiro256(seed: seed)
    return (0..<n).map { _ in
        let v = rng.nextFloat(in: -scale, scale)
        return v >= 0 ? v + margin : v - margin
    }
}

/// Σ r ⊙ y in Double: the scalar whose gradient w.r.t. y is r.
func weightedSum(_ y: Matrix, _ r: [Float]) -> Double {
    precondition(y.count == r.count)
    var s = 0.0
    for i in 0..<r.count { s += Double(y.base[i]) * Double(r[i]) }
    return s
}

/// Something whose gradient is checked: `count` floats at `values`, analytic gradient given.
struct GradientTarget {
    let name: String
    let values: UnsafeMutablePointer<Float>
    let count: Int
    let analytic: [Float]
    /// Names element i (parameter name for flat buffers).
    var label: (Int) -> String = { "[\($0)]" }

    static func parameters(_ store: ParameterStore) -> GradientTarget {
        let infos = store.infos
        return GradientTarget(name: "parameters", values: store.values.baseAddress!, count: store.count,
                              analytic: Array(store.gradients), label: { i in
                                  let info = infos.last { $0.offset <= i }!
                                  return "\(info.name)[\(i - info.offset)]"
                              })
    }

    static func input(_ name: String, _ t: Tensor, gradient: Matrix) -> GradientTarget {
        GradientTarget(name: name, values: t.base, count: t.count, analytic: gradient.toArray())
    }
}

/// Compares analytic gradients with central differences (L(θ+h) − L(θ−h)) / 2h of `loss`,
/// element by element: |analytic − numeric| ≤ absolute + relative·|numeric|.
///
/// `outliers` mismatching elements per target are tolerated: in whole networks a perturbation
/// of h can move some ReLU input across zero, and the difference quotient then mixes two
/// slopes. Every layer is also checked alone with inputs kept away from the kinks, with none.
func expectGradientsMatch(_ targets: [GradientTarget], step h: Float = 1e-3, absolute: Double = 2e-3,
                          relative: Double = 1e-2, outliers: Int = 0, sourceLocation: SourceLocation = #_sourceLocation,
                          loss: () -> Double) {
    var checked = 0
    for t in targets {
        #expect(t.analytic.count == t.count, "\(t.name): analytic gradient has the wrong length", sourceLocation: sourceLocation)
        var failures: [String] = []
        var worst = 0.0
        for i in 0..<t.count {
            let saved = t.values[i]
            t.values[i] = saved + h
            let up = loss()
            t.values[i] = saved - h
            let down = loss()
            t.values[i] = saved
            let numeric = (up - down) / (Double(saved + h) - Double(saved - h))
            let analytic = Double(t.analytic[i])
            let err = abs(analytic - numeric)
            worst = max(worst, err)
            if err > absolute + relative * abs(numeric) {
                failures.append("\(t.name)\(t.label(i)): analytic \(analytic), numeric \(numeric)")
            }
            checked += 1
        }
        #expect(failures.count <= outliers, "\(t.name): \(failures.count) of \(t.count) gradients off (worst |err| \(worst)): \(failures.prefix(5))",
                sourceLocation: sourceLocation)
    }
    #expect(checked > 0, "nothing was checked", sourceLocation: sourceLocation)
}

/// Runs `body` with a temporary matrix holding `values`, keeping its storage alive throughout
/// (a `Matrix` is only a view: the tensor behind it must outlive every use).
func withMatrix<T>(_ rows: Int, _ cols: Int, _ values: [Float], _ body: (Matrix) -> T) -> T {
    let t = Tensor(rows: rows, cols: cols, values: values)
    return withExtendedLifetime(t) { body(t.matrix) }
}
