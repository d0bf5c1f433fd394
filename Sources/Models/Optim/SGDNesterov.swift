/// SGD with Nesterov momentum over a flat buffer, in PyTorch's formulation:
///
///     g ← g + wd·θ;   b ← μ·b + g;   θ ← θ − lr·(g + μ·b)
///
/// DiLoCo's outer step runs this on every peer and the results must be bit-identical across
/// CPUs. Hence plain scalar Swift in a fixed order: no BLAS (OpenBLAS picks kernels per CPU), no
/// SIMD reductions, and `a * b + c` written plainly, which Swift never contracts into a fused
/// multiply-add (FMA rounds once, so x86-64 with FMA and arm64 would otherwise disagree).
public final class SGDNesterov {
    public var learningRate: Float
    public var momentum: Float
    public var weightDecay: Float
    public let count: Int
    /// The momentum buffer b, part of the shared state in DiLoCo.
    public private(set) var momentumBuffer: [Float]

    public init(count: Int, learningRate: Float, momentum: Float = 0.9, weightDecay: Float = 0) {
        self.count = count
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
        momentumBuffer = Array(repeating: 0, count: count)
    }

    /// Updates `parameters` in place from `gradients` (both `count` long).
    public func step(parameters: UnsafeMutableBufferPointer<Float>, gradients: UnsafeBufferPointer<Float>) {
        precondition(parameters.count == count && gradients.count == count, "buffer length mismatch")
        momentumBuffer.withUnsafeMutableBufferPointer { b in
            SGDNesterov.kernel(parameters.baseAddress!, gradients.baseAddress!, b.baseAddress!, count,
                               lr: learningRate, mu: momentum, wd: weightDecay)
        }
    }

    /// Replaces the momentum buffer (restoring shared state).
    public func setMomentum(_ values: [Float]) {
        precondition(values.count == count, "momentum length mismatch")
        momentumBuffer = values
    }

    /// The same update over raw buffers, for callers that keep the momentum elsewhere (DiLoCo keeps
    /// it in the shared state).
    public static func apply(parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>,
                             momentum: UnsafeMutablePointer<Float>, count: Int, learningRate: Float,
                             momentumFactor: Float, weightDecay: Float = 0) {
        kernel(parameters, gradients, momentum, count, lr: learningRate, mu: momentumFactor, wd: weightDecay)
    }

    @inline(never)
    static func kernel(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, _ b: UnsafeMutablePointer<Float>,
                       _ n: Int, lr: Float, mu: Float, wd: Float) {
        var i = 0
        while i < n {
            var gi = g[i]
            if wd != 0 {
                let decay = wd * p[i]
                gi = gi + decay
            }
            let scaled = mu * b[i]
            let bi = scaled + gi
            b[i] = bi
            let look = mu * bi
            let direction = gi + look
            let delta = lr * direction
            p[i] = p[i] - delta
            i += 1
        }
    }
}
