/// Rectified linear unit. Backward needs only the output (y > 0 ⇔ x > 0), so no input is kept.
public final class ReLU {
    public let output = Tensor()
    public let inputGradient = Tensor()

    public init() {}

    public func forward(_ x: Matrix) -> Matrix {
        let y = output.resize(rows: x.rows, cols: x.cols)
        Kernels.relu(x.base, y.base, x.count)
        return y
    }

    public func backward(_ dy: Matrix) -> Matrix {
        precondition(dy.count == output.count, "ReLU.backward: bad dy shape")
        let dx = inputGradient.resize(rows: dy.rows, cols: dy.cols)
        Kernels.reluBackward(dy.base, output.base, dx.base, dy.count)
        return dx
    }
}
