import Foundation

/// Settings of `AdamW`.
public struct AdamWConfig: Sendable {
    public var learningRate: Float = 1e-3
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    public var epsilon: Float = 1e-8
    /// Decoupled weight decay (Loshchilov & Hutter 2019), applied only to parameters whose
    /// `ParameterInfo.decays` is true, as lr·wd·θ. 0 gives plain Adam.
    public var weightDecay: Float = 0
    /// Linear warm-up of the learning rate over this many steps (0: none).
    public var warmupSteps = 0

    public init(learningRate: Float = 1e-3, weightDecay: Float = 0, warmupSteps: Int = 0) {
        self.learningRate = learningRate
        self.weightDecay = weightDecay
        self.warmupSteps = warmupSteps
    }
}

/// Adam with decoupled weight decay over a model's flat parameter and gradient buffers.
///
/// Each peer keeps its own moments (DiLoCo's inner optimizer is local), so the update is a
/// plain loop LLVM vectorizes freely: its result never has to match another CPU's.
public final class AdamW {
    public var config: AdamWConfig
    public let store: ParameterStore
    public internal(set) var step = 0
    let firstMoment: Tensor
    let secondMoment: Tensor
    private let ranges: [(offset: Int, count: Int, decays: Bool)]

    public init(_ store: ParameterStore, config: AdamWConfig) {
        precondition(store.isSealed, "seal the parameter store before creating the optimizer")
        self.store = store
        self.config = config
        firstMoment = Tensor(rows: 1, cols: store.count)
        secondMoment = Tensor(rows: 1, cols: store.count)
        // Merge neighbouring parameters with the same decay flag into one pass.
        var r: [(offset: Int, count: Int, decays: Bool)] = []
        for info in store.infos {
            if let last = r.last, last.decays == info.decays, last.offset + last.count == info.offset {
                r[r.count - 1].count += info.count
            } else {
                r.append((info.offset, info.count, info.decays))
            }
        }
        ranges = r
    }

    /// The learning rate the next `update()` will use.
    public var currentLearningRate: Float {
        let t = step + 1
        guard config.warmupSteps > 0, t < config.warmupSteps else { return config.learningRate }
        return config.learningRate * Float(t) / Float(config.warmupSteps)
    }

    /// Resets the moments and the step count (e.g. after a checkpoint restore on another peer).
    public func reset() {
        step = 0
        firstMoment.matrix.zero()
        secondMoment.matrix.zero()
    }

    /// One update from the gradients currently in the store.
    public func update() {
        let lr = currentLearningRate
        step += 1
        let t = Float(step)
        let c = config
        let bc1 = 1 - Float(Foundation.pow(Double(c.beta1), Double(t)))
        let bc2 = 1 - Float(Foundation.pow(Double(c.beta2), Double(t)))
        let p = store.values.baseAddress!, g = store.gradients.baseAddress!
        for r in ranges {
            AdamW.kernel(p + r.offset, g + r.offset, firstMoment.base + r.offset, secondMoment.base + r.offset,
                         r.count, lr: lr, beta1: c.beta1, beta2: c.beta2, epsilon: c.epsilon,
                         decay: r.decays ? c.weightDecay : 0, bc1: bc1, bc2: bc2)
        }
    }

    /// The update of one range of parameters.
    ///
    /// Release builds use `vectorKernel`: on Linux `Float.squareRoot()` lowers to a `sqrtf` call,
    /// which keeps LLVM from vectorizing the plain loop (measured: 7% of a GCN step), while
    /// `SIMD8.squareRoot()` is a vector instruction. Debug builds, where the tests train models,
    /// use `scalarKernel`: unoptimised SIMD types cost ~20x a scalar loop (see `Kernels`). The two
    /// compute the same formula; a test checks that they agree.
    @inline(__always)
    static func kernel(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                       _ m: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>, _ n: Int,
                       lr: Float, beta1: Float, beta2: Float, epsilon: Float, decay: Float,
                       bc1: Float, bc2: Float) {
        #if DEBUG
        scalarKernel(p, g, m, v, n, lr: lr, beta1: beta1, beta2: beta2, epsilon: epsilon, decay: decay, bc1: bc1, bc2: bc2)
        #else
        vectorKernel(p, g, m, v, n, lr: lr, beta1: beta1, beta2: beta2, epsilon: epsilon, decay: decay, bc1: bc1, bc2: bc2)
        #endif
    }

    @inline(never)
    static func scalarKernel(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                             _ m: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>, _ n: Int,
                             lr: Float, beta1: Float, beta2: Float, epsilon: Float, decay: Float,
                             bc1: Float, bc2: Float) {
        scalarTail(p, g, m, v, from: 0, n, lr: lr, beta1: beta1, beta2: beta2, epsilon: epsilon, decay: decay, bc1: bc1, bc2: bc2)
    }

    @inline(__always)
    static func scalarTail(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                           _ m: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>, from start: Int, _ n: Int,
                           lr: Float, beta1: Float, beta2: Float, epsilon: Float, decay: Float,
                           bc1: Float, bc2: Float) {
        let s = lr / bc1, sh = 1 - lr * decay, invBc2 = 1 / bc2
        var i = start
        while i < n {
            let gi = g[i]
            let mi = beta1 * m[i] + (1 - beta1) * gi
            let vi = beta2 * v[i] + (1 - beta2) * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] = p[i] * sh - s * mi / ((vi * invBc2).squareRoot() + epsilon)
            i &+= 1
        }
    }

    @inline(never)
    static func vectorKernel(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                       _ m: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>, _ n: Int,
                       lr: Float, beta1: Float, beta2: Float, epsilon: Float, decay: Float,
                       bc1: Float, bc2: Float) {
        typealias V = SIMD8<Float>
        let b1 = V(repeating: beta1), b2 = V(repeating: beta2)
        let ob1 = V(repeating: 1 - beta1), ob2 = V(repeating: 1 - beta2)
        let stepSize = V(repeating: lr / bc1), invBc2 = V(repeating: 1 / bc2)
        let eps = V(repeating: epsilon), shrink = V(repeating: 1 - lr * decay)
        var i = 0
        while i &+ 8 <= n {
            let gi = UnsafeRawPointer(g + i).loadUnaligned(as: V.self)
            let mi = b1 * UnsafeRawPointer(m + i).loadUnaligned(as: V.self) + ob1 * gi
            let vi = b2 * UnsafeRawPointer(v + i).loadUnaligned(as: V.self) + ob2 * gi * gi
            let pi = UnsafeRawPointer(p + i).loadUnaligned(as: V.self)
            UnsafeMutableRawPointer(m + i).storeBytes(of: mi, as: V.self)
            UnsafeMutableRawPointer(v + i).storeBytes(of: vi, as: V.self)
            let updated = pi * shrink - stepSize * mi / ((vi * invBc2).squareRoot() + eps)
            UnsafeMutableRawPointer(p + i).storeBytes(of: updated, as: V.self)
            i &+= 8
        }
        scalarTail(p, g, m, v, from: i, n, lr: lr, beta1: beta1, beta2: beta2, epsilon: epsilon, decay: decay, bc1: bc1, bc2: bc2)
    }
}
