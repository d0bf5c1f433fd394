import Foundation
import Testing
@testable import Models

@Suite struct OptimizerTests {
    /// A store with one decaying 1×1 weight and one non-decaying bias.
    static func store(weight: Float, bias: Float) -> (ParameterStore, Param, Param) {
        let s = ParameterStore()
        let w = s.add("w", shape: [1, 1], initializer: .zeros)
        let b = s.add("b", shape: [1], initializer: .zeros)
        s.seal(seed: 0)
        s.value(w)[0, 0] = weight
        s.value(b)[0, 0] = bias
        return (s, w, b)
    }

    @Test func adamWTwoStepsByHand() {
        let (s, w, b) = Self.store(weight: 1, bias: 1)
        let opt = AdamW(s, config: AdamWConfig(learningRate: 0.1, weightDecay: 0.01))
        s.gradient(w)[0, 0] = 0.5
        s.gradient(b)[0, 0] = 0.5
        opt.update()
        // m = 0.05, v = 0.00025, m̂ = 0.5, v̂ = 0.25: step = 0.1 · 0.5 / (0.5 + 1e-8) ≈ 0.1;
        // the weight also shrinks by lr · wd = 0.001, the bias does not.
        #expect(abs(s.value(w)[0, 0] - 0.899) < 1e-6)
        #expect(abs(s.value(b)[0, 0] - 0.9) < 1e-6)
        s.gradient(w)[0, 0] = -0.25
        s.gradient(b)[0, 0] = -0.25
        opt.update()
        let m = 0.9 * 0.05 + 0.1 * -0.25, v = 0.999 * 0.00025 + 0.001 * 0.0625
        let step = 0.1 * (m / (1 - 0.81)) / ((v / (1 - 0.998001)).squareRoot() + 1e-8)
        #expect(abs(Double(s.value(w)[0, 0]) - (0.899 * (1 - 0.001) - step)) < 1e-6)
        #expect(abs(Double(s.value(b)[0, 0]) - (0.9 - step)) < 1e-6)
        #expect(opt.step == 2)
    }

    /// A restored optimizer continues exactly as the original would have.
    @Test func adamWStateRoundTripsAndRefusesAnotherModel() throws {
        let (s1, w1, b1) = Self.store(weight: 1, bias: 1)
        let (s2, w2, b2) = Self.store(weight: 1, bias: 1)
        let a = AdamW(s1, config: AdamWConfig(learningRate: 0.1, warmupSteps: 5))
        let b = AdamW(s2, config: AdamWConfig(learningRate: 0.1, warmupSteps: 5))
        for g: Float in [0.5, -0.3, 0.2] {
            s1.gradient(w1)[0, 0] = g
            s1.gradient(b1)[0, 0] = -g
            a.update()
        }
        try b.restoreState(a.encodedState())
        s2.value(w2)[0, 0] = s1.value(w1)[0, 0]
        s2.value(b2)[0, 0] = s1.value(b1)[0, 0]
        #expect(b.step == 3)
        for opt in [(a, s1, w1, b1), (b, s2, w2, b2)] {
            opt.1.gradient(opt.2)[0, 0] = 0.7
            opt.1.gradient(opt.3)[0, 0] = 0.1
            opt.0.update()
        }
        #expect(s1.value(w1)[0, 0].bitPattern == s2.value(w2)[0, 0].bitPattern)
        #expect(s1.value(b1)[0, 0].bitPattern == s2.value(b2)[0, 0].bitPattern)
        // Another model's state, a truncated one, or garbage: refused, nothing changed.
        let other = ParameterStore()
        _ = other.add("w", shape: [3], initializer: .zeros)
        other.seal(seed: 0)
        let state = a.encodedState()
        #expect(throws: AdamW.StateError.self) { try AdamW(other, config: AdamWConfig()).restoreState(state) }
        #expect(throws: AdamW.StateError.self) { try b.restoreState(Array(state.dropLast())) }
        #expect(throws: AdamW.StateError.self) { try b.restoreState([UInt8](repeating: 7, count: 40)) }
        #expect(b.step == 4)
    }

    @Test func adamWLinearWarmup() {
        let (s, w, _) = Self.store(weight: 0, bias: 0)
        let opt = AdamW(s, config: AdamWConfig(learningRate: 0.1, warmupSteps: 4))
        #expect(abs(opt.currentLearningRate - 0.025) < 1e-9)
        s.gradient(w)[0, 0] = 2
        opt.update()
        #expect(abs(s.value(w)[0, 0] - -0.025) < 1e-6)  // first Adam step moves by lr·sign(g)
        opt.update(); opt.update()
        #expect(opt.currentLearningRate == 0.1)
    }

    @Test func sgdNesterovTwoStepsByHand() {
        let opt = SGDNesterov(count: 2, learningRate: 0.1, momentum: 0.9)
        var p: [Float] = [1, -2]
        let g: [Float] = [0.5, 0.25]
        p.withUnsafeMutableBufferPointer { pp in g.withUnsafeBufferPointer { opt.step(parameters: pp, gradients: $0) } }
        // b = g; θ ← θ − lr·(g + μ·b) = 1 − 0.1·(0.5 + 0.45)
        #expect(abs(p[0] - 0.905) < 1e-7)
        #expect(abs(p[1] - (-2 - 0.1 * 0.475)) < 1e-7)
        p.withUnsafeMutableBufferPointer { pp in g.withUnsafeBufferPointer { opt.step(parameters: pp, gradients: $0) } }
        // b = 0.9·0.5 + 0.5 = 0.95; θ ← 0.905 − 0.1·(0.5 + 0.855)
        #expect(abs(p[0] - 0.7695) < 1e-6)
        #expect(abs(opt.momentumBuffer[0] - 0.95) < 1e-7)
    }

    @Test func sgdNesterovIsBitExactScalarArithmetic() {
        // The same sequence of single-rounding Float operations, written out: results must be
        // identical to the bit (no fused multiply-add, no reordering).
        let n = 1000
        let p0 = randomValues(n, seed: 40, scale: 3), g = randomValues(n, seed: 41), b0 = randomValues(n, seed: 42)
        let lr: Float = 0.7, mu: Float = 0.9, wd: Float = 0.01
        let opt = SGDNesterov(count: n, learningRate: lr, momentum: mu, weightDecay: wd)
        opt.setMomentum(b0)
        var p = p0
        p.withUnsafeMutableBufferPointer { pp in g.withUnsafeBufferPointer { opt.step(parameters: pp, gradients: $0) } }
        var mismatches = 0
        for i in 0..<n {
            let gi: Float = g[i] + wd * p0[i]
            let bi: Float = mu * b0[i] + gi
            let expected: Float = p0[i] - lr * (gi + mu * bi)
            if expected.bitPattern != p[i].bitPattern || bi.bitPattern != opt.momentumBuffer[i].bitPattern { mismatches += 1 }
        }
        #expect(mismatches == 0)
        // Golden value: pins the rounding of one element across platforms.
        let one = SGDNesterov(count: 1, learningRate: 0.7, momentum: 0.9)
        var q: [Float] = [0.1]
        q.withUnsafeMutableBufferPointer { pp in [Float(0.3)].withUnsafeBufferPointer { one.step(parameters: pp, gradients: $0) } }
        #expect(q[0].bitPattern == (Float(0.1) - Float(0.7) * (Float(0.3) + Float(0.9) * Float(0.3))).bitPattern)
        #expect(q[0].bitPattern == 0xBE99_1688)  // -0.29900002, computed with float32 rounding per operation
    }
}

@Suite struct AdamWKernelTests {
    /// Release builds run the SIMD kernel, debug builds (these tests) the scalar one: both must
    /// compute the same update.
    @Test func vectorAndScalarKernelsAgree() {
        let n = 45  // SIMD part plus a tail
        let p0 = randomValues(n, seed: 60), g = randomValues(n, seed: 61)
        let m0 = randomValues(n, seed: 62, scale: 0.1), v0 = randomValues(n, seed: 63, scale: 0.1).map { abs($0) }
        func run(_ vector: Bool) -> [Float] {
            var p = p0, m = m0, v = v0
            p.withUnsafeMutableBufferPointer { pp in m.withUnsafeMutableBufferPointer { mp in v.withUnsafeMutableBufferPointer { vp in
                g.withUnsafeBufferPointer { gp in
                    if vector {
                        AdamW.vectorKernel(pp.baseAddress!, gp.baseAddress!, mp.baseAddress!, vp.baseAddress!, n, lr: 0.01,
                                           beta1: 0.9, beta2: 0.999, epsilon: 1e-8, decay: 0.1, bc1: 0.19, bc2: 0.002)
                    } else {
                        AdamW.scalarKernel(pp.baseAddress!, gp.baseAddress!, mp.baseAddress!, vp.baseAddress!, n, lr: 0.01,
                                           beta1: 0.9, beta2: 0.999, epsilon: 1e-8, decay: 0.1, bc1: 0.19, bc2: 0.002)
                    }
                }
            } } }
            return p + m + v
        }
        let a = run(true), b = run(false)
        #expect(a != p0 + m0 + v0)
        for i in 0..<a.count { #expect(abs(a[i] - b[i]) <= 1e-6 * max(1, abs(b[i])), "element \(i): \(a[i]) vs \(b[i])") }
    }
}
