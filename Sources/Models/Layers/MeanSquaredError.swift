/// Mean squared error of a prediction column against targets, gradient fused into forward:
/// d/dp = 2(p − t)/n.
public final class MeanSquaredError {
    public let predictionGradient = Tensor()

    public init() {}

    @discardableResult
    public func forward(_ prediction: Matrix, targets: UnsafeBufferPointer<Float>, computeGradient: Bool = true) -> Float {
        precondition(prediction.count == targets.count, "one target per prediction expected")
        let n = prediction.count
        let g = computeGradient ? predictionGradient.resize(rows: prediction.rows, cols: prediction.cols) : nil
        guard n > 0 else { return 0 }
        var total: Double = 0
        let scale = 2 / Float(n)
        for i in 0..<n {
            let d = prediction.base[i] - targets[i]
            total += Double(d * d)
            g?.base[i] = scale * d
        }
        return Float(total / Double(n))
    }
}
