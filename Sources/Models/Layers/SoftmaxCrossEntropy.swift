import Foundation

/// Mean softmax cross-entropy of logits against integer labels, over all rows or over a
/// subset of rows (GCN trains on 140 of Cora's 2708 nodes but predicts all of them).
///
/// Forward and backward are fused: the gradient (softmax − onehot) / n is written during the
/// forward pass, since it needs the same softmax; rows outside the subset get zero gradient.
public final class SoftmaxCrossEntropy {
    public let logitsGradient = Tensor()
    /// Rows among those scored whose arg-max equals the label (for accuracy).
    public private(set) var correct = 0
    public private(set) var counted = 0

    public init() {}

    /// Returns the mean loss over `rows` (all rows if nil) and fills `logitsGradient`.
    @discardableResult
    public func forward(_ logits: Matrix, labels: UnsafeBufferPointer<Int32>,
                        rows: UnsafeBufferPointer<Int32>? = nil, computeGradient: Bool = true) -> Float {
        precondition(labels.count == logits.rows, "one label per row expected")
        let c = logits.cols
        let grad = computeGradient ? logitsGradient.resizeZeroed(rows: logits.rows, cols: c) : nil
        let n = rows?.count ?? logits.rows
        correct = 0
        counted = n
        guard n > 0 else { return 0 }
        let invN = 1 / Float(n)
        var total: Double = 0
        for k in 0..<n {
            let r = rows.map { Int($0[k]) } ?? k
            let z = logits.row(r)
            let y = Int(labels[r])
            precondition(y >= 0 && y < c, "label \(y) out of range 0..<\(c)")
            var maxV = z[0], arg = 0
            for j in 1..<c where z[j] > maxV { maxV = z[j]; arg = j }
            if arg == y { correct += 1 }
            var sum: Float = 0
            for j in 0..<c { sum += expf(z[j] - maxV) }
            let logSum = logf(sum) + maxV
            total += Double(logSum - z[y])
            if let grad {
                let g = grad.row(r)
                for j in 0..<c { g[j] = expf(z[j] - logSum) * invN }
                g[y] -= invN
            }
        }
        return Float(total / Double(n))
    }

    public var accuracy: Double { counted == 0 ? 0 : Double(correct) / Double(counted) }
}
