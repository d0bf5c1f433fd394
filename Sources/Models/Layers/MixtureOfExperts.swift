/// Top-k routed mixture of expert MLPs with a residual connection:
///
///     p = softmax(h·W_r)                       router, no bias
///     gates = p[top-k] / Σ p[top-k]            renormalised (Mixtral)
///     y = h + Σ_k gate_k · expert_{i_k}(h),    expert(x) = ReLU(x·W1 + b1)·W2 + b2
///     aux = E · Σ_e f_e · P_e                  Switch Transformer load balancing
///
/// with f_e the share of the B·k assignments routed to e and P_e the mean router probability
/// of e. Dispatch is sparse: each expert gathers its rows, runs two sgemms and scatter-adds the
/// gated result, so the work is B·k rows, not E·B. Assignments are taken in token order; those
/// beyond an expert's capacity are dropped (their gate contributes nothing) and counted.
public final class MixtureOfExperts {
    public let config: MixtureOfExpertsConfig
    public let store: ParameterStore
    public let router: Param
    let first: [Linear]
    let activation: [ReLU]
    let second: [Linear]
    public let output = Tensor()
    public let inputGradient = Tensor()
    /// Load-balancing loss of the last forward pass (unweighted).
    public private(set) var auxLoss: Float = 0
    /// Share of assignments dropped for capacity in the last forward pass.
    public private(set) var droppedFraction: Float = 0

    private var input: Matrix?
    private let logits = Tensor()
    private let probabilities = Tensor()
    private let probabilityGradient = Tensor()
    private var topIndex: [Int32] = []      // B·k expert ids, token-major
    private var topGate: [Float] = []       // B·k renormalised gates
    private var slotRow: [Int32] = []       // B·k row in the expert's batch, −1 if dropped
    private var gateGradient: [Float] = []  // B·k
    private var selectedSum: [Float] = []   // B
    private var assignmentShare: [Float] = []  // E: f_e
    private var tokens: [[Int32]]
    private var tokenSlots: [[Int32]]
    private let expertInput: [Tensor]
    private let expertOutputGradient: [Tensor]

    public init(_ store: ParameterStore, name: String, config: MixtureOfExpertsConfig) {
        precondition(config.topK >= 1 && config.topK <= config.experts, "need 1 ≤ k ≤ E")
        self.config = config
        self.store = store
        let d = config.dModel, h = config.hidden, e = config.experts
        router = store.add("\(name).router", shape: [d, e], initializer: .glorotUniform(fanIn: d, fanOut: e))
        first = (0..<e).map { Linear(store, name: "\(name).expert\($0).fc1", inFeatures: d, outFeatures: h) }
        activation = (0..<e).map { _ in ReLU() }
        second = (0..<e).map { Linear(store, name: "\(name).expert\($0).fc2", inFeatures: h, outFeatures: d) }
        tokens = Array(repeating: [], count: e)
        tokenSlots = Array(repeating: [], count: e)
        expertInput = (0..<e).map { _ in Tensor() }
        expertOutputGradient = (0..<e).map { _ in Tensor() }
        assignmentShare = Array(repeating: 0, count: e)
    }

    public func capacity(batch: Int) -> Int {
        let c = config.effectiveCapacityFactor * Float(batch * config.topK) / Float(config.experts)
        return Int(c.rounded(.up))
    }

    public func forward(_ h: Matrix) -> Matrix {
        let b = h.rows, d = config.dModel, e = config.experts, k = config.topK
        precondition(h.cols == d, "MixtureOfExperts expects \(d) features")
        input = h
        let z = logits.resize(rows: b, cols: e)
        BLAS.gemm(h, store.value(router), into: z)
        let p = probabilities.resize(rows: b, cols: e)
        for t in 0..<b { Softmax.row(z.row(t), into: p.row(t), e) }

        resetScratch(batch: b)
        let cap = capacity(batch: b)
        var dropped = 0
        for t in 0..<b {
            let pr = p.row(t)
            var sum: Float = 0
            for j in 0..<k {
                // j-th largest: strictly greater than all later picks, ties to the lower index.
                var best = -1
                var bestV: Float = -1
                for c in 0..<e where pr[c] > bestV && !alreadyPicked(c, t, j) {
                    best = c; bestV = pr[c]
                }
                if best < 0 {
                    // Only NaN is left (a NaN input or router weight makes the whole softmax
                    // row NaN, and NaN compares false): route to the lowest unpicked expert and
                    // let its NaN gate carry through to the output and the loss, where the
                    // trainer sees it, instead of indexing expert −1.
                    best = (0..<e).first { !alreadyPicked($0, t, j) }!
                    bestV = pr[best]
                }
                topIndex[t * k + j] = Int32(best)
                topGate[t * k + j] = bestV
                sum += bestV
            }
            selectedSum[t] = sum
            for j in 0..<k {
                let slot = t * k + j
                topGate[slot] /= sum
                let ex = Int(topIndex[slot])
                assignmentShare[ex] += 1
                if tokens[ex].count < cap {
                    slotRow[slot] = Int32(tokens[ex].count)
                    tokens[ex].append(Int32(t))
                    tokenSlots[ex].append(Int32(slot))
                } else {
                    dropped += 1
                }
            }
        }
        droppedFraction = Float(dropped) / Float(max(b * k, 1))

        let y = output.resize(rows: b, cols: d)
        Kernels.copy(h.base, y.base, h.count)
        for ex in 0..<e where !tokens[ex].isEmpty {
            let n = tokens[ex].count
            let xe = expertInput[ex].resize(rows: n, cols: d)
            tokens[ex].withUnsafeBufferPointer { SparseKernels.gatherRows(h, indices: $0, into: xe) }
            let o = second[ex].forward(activation[ex].forward(first[ex].forward(xe)))
            for r in 0..<n {
                let slot = Int(tokenSlots[ex][r])
                SparseKernels.rowAXPY(topGate[slot], o.row(r), y.row(Int(tokens[ex][r])), d)
            }
        }

        // aux = E · Σ_e f_e · P_e
        var aux: Float = 0
        for ex in 0..<e {
            assignmentShare[ex] /= Float(b * k)
            var meanP: Float = 0
            for t in 0..<b { meanP += p[t, ex] }
            aux += assignmentShare[ex] * meanP / Float(b)
        }
        auxLoss = Float(e) * aux
        return y
    }

    @inline(__always)
    private func alreadyPicked(_ c: Int, _ t: Int, _ j: Int) -> Bool {
        var i = 0
        while i < j { if Int(topIndex[t * config.topK + i]) == c { return true }; i += 1 }
        return false
    }

    private func resetScratch(batch b: Int) {
        let n = b * config.topK
        if topIndex.count < n {  // grow only: evaluation batches must not cost reallocations later
            topIndex = Array(repeating: 0, count: n)
            topGate = Array(repeating: 0, count: n)
            slotRow = Array(repeating: -1, count: n)
            gateGradient = Array(repeating: 0, count: n)
            selectedSum = Array(repeating: 0, count: b)
        }
        for i in 0..<n { slotRow[i] = -1; gateGradient[i] = 0 }
        for ex in 0..<config.experts {
            tokens[ex].removeAll(keepingCapacity: true)
            tokenSlots[ex].removeAll(keepingCapacity: true)
            assignmentShare[ex] = 0
        }
    }

    /// `dy` is the gradient of the task loss w.r.t. the output; the load-balancing term enters
    /// with `config.auxCoefficient`. Returns dL/dh.
    public func backward(_ dy: Matrix) -> Matrix {
        guard let h = input else { preconditionFailure("MixtureOfExperts.backward before forward") }
        let b = h.rows, d = config.dModel, e = config.experts, k = config.topK
        precondition(dy.rows == b && dy.cols == d, "MixtureOfExperts.backward: bad dy shape")
        let dh = inputGradient.resize(rows: b, cols: d)
        Kernels.copy(dy.base, dh.base, dy.count)

        for ex in 0..<e where !tokens[ex].isEmpty {
            let n = tokens[ex].count
            let o = second[ex].output.matrix
            let dOut = expertOutputGradient[ex].resize(rows: n, cols: d)
            for r in 0..<n {
                let slot = Int(tokenSlots[ex][r])
                let src = dy.row(Int(tokens[ex][r]))
                gateGradient[slot] = Kernels.dot(src, o.row(r), d)
                let g = topGate[slot], dst = dOut.row(r)
                for j in 0..<d { dst[j] = g * src[j] }
            }
            let dx = first[ex].backward(activation[ex].backward(second[ex].backward(dOut)))
            tokens[ex].withUnsafeBufferPointer { SparseKernels.scatterAddRows(dx, indices: $0, into: dh) }
        }

        let p = probabilities.matrix
        let dp = probabilityGradient.resize(rows: b, cols: e)
        // Load balancing: d aux / d p[t, e] = E · f_e / B (f is a count: no gradient).
        let auxScale = config.auxCoefficient * Float(e) / Float(b)
        for t in 0..<b {
            let row = dp.row(t)
            for ex in 0..<e { row[ex] = auxScale * assignmentShare[ex] }
            // gates g_j = p_j / S  ⇒  dp_i = (dg_i − Σ_j g_j·dg_j) / S for the selected i.
            var weighted: Float = 0
            for j in 0..<k { weighted += topGate[t * k + j] * gateGradient[t * k + j] }
            let s = selectedSum[t]
            for j in 0..<k {
                let slot = t * k + j
                row[Int(topIndex[slot])] += (gateGradient[slot] - weighted) / s
            }
            Softmax.backwardRow(p.row(t), row, e)  // dp → d logits in place
        }
        BLAS.gemm(h, transposeA: true, dp, into: store.gradient(router), beta: 1)
        BLAS.gemm(dp, store.value(router), transposeB: true, into: dh, beta: 1)
        return dh
    }

    /// Tokens routed to each expert in the last forward pass (after capacity).
    public var expertLoad: [Int] { tokens.map(\.count) }
}
