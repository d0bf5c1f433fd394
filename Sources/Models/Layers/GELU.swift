import Foundation

/// GELU with the tanh approximation (Hendrycks & Gimpel 2016), as in BERT/GPT-2:
/// y = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
public final class GELU {
    public let output = Tensor()
    public let inputGradient = Tensor()
    private var input: Matrix?
    private static let c: Float = 0.797_884_56  // sqrt(2/pi)
    private static let k: Float = 0.044_715

    public init() {}

    public func forward(_ x: Matrix) -> Matrix {
        input = x
        let y = output.resize(rows: x.rows, cols: x.cols)
        let c = GELU.c, k = GELU.k
        for i in 0..<x.count {
            let v = x.base[i]
            y.base[i] = 0.5 * v * (1 + tanhf(c * (v + k * v * v * v)))
        }
        return y
    }

    public func backward(_ dy: Matrix) -> Matrix {
        guard let x = input else { preconditionFailure("GELU.backward before forward") }
        precondition(dy.count == x.count, "GELU.backward: bad dy shape")
        let dx = inputGradient.resize(rows: dy.rows, cols: dy.cols)
        let c = GELU.c, k = GELU.k
        for i in 0..<x.count {
            let v = x.base[i]
            let t = tanhf(c * (v + k * v * v * v))
            let d = 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * c * (1 + 3 * k * v * v)
            dx.base[i] = dy.base[i] * d
        }
        return dx
    }
}
