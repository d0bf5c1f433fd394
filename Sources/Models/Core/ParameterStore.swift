/// How a parameter is filled when the store is sealed.
public enum Initializer: Sendable, Equatable {
    case zeros
    case ones
    /// Glorot/Xavier uniform: U(-a, a), a = sqrt(6 / (fanIn + fanOut)).
    case glorotUniform(fanIn: Int, fanOut: Int)
    /// U(-bound, bound).
    case uniform(bound: Float)
    /// N(0, std²).
    case normal(std: Float)
}

/// Where one named parameter lives in the store's flat buffers.
public struct Param: Sendable, Hashable {
    public let index: Int
    public let offset: Int
    public let rows: Int
    public let cols: Int
    public var count: Int { rows * cols }
}

/// Description of a parameter, for the distributed layer and for checkpoints.
public struct ParameterInfo: Sendable, Equatable {
    public let name: String
    public let shape: [Int]
    public let offset: Int
    public let count: Int
    /// Whether decoupled weight decay applies (weights yes; biases, norms and scalars no).
    public let decays: Bool
    public let initializer: Initializer
}

/// All parameters of a model as views into ONE flat `Float` buffer, and their gradients as views
/// into a second one of the same layout.
///
/// The distributed layer all-reduces, digests and checkpoints a model through these two buffers
/// without knowing its layers and without copying tensor by tensor. Layers declare parameters
/// while the model is built (`add`), then the model calls `seal(seed:)` once, which allocates both
/// buffers and fills them deterministically, in declaration order, from the seed.
public final class ParameterStore {
    public private(set) var infos: [ParameterInfo] = []
    /// Total number of scalars.
    public private(set) var count = 0
    public private(set) var isSealed = false
    private var valuesBase: UnsafeMutablePointer<Float>?
    private var gradientsBase: UnsafeMutablePointer<Float>?

    public init() {}

    deinit {
        valuesBase?.deallocate()
        gradientsBase?.deallocate()
    }

    /// Declares a parameter. Names must be unique; a 1-D shape `[n]` is a 1 × n row.
    @discardableResult
    public func add(_ name: String, shape: [Int], initializer: Initializer, decays: Bool? = nil) -> Param {
        precondition(!isSealed, "parameters must be declared before the store is sealed")
        precondition(!shape.isEmpty && shape.count <= 2 && shape.allSatisfy { $0 > 0 }, "bad shape \(shape) for \(name)")
        precondition(!infos.contains { $0.name == name }, "duplicate parameter name \(name)")
        let rows = shape.count == 2 ? shape[0] : 1
        let cols = shape.count == 2 ? shape[1] : shape[0]
        let p = Param(index: infos.count, offset: count, rows: rows, cols: cols)
        infos.append(ParameterInfo(name: name, shape: shape, offset: count, count: rows * cols,
                                   decays: decays ?? (shape.count == 2), initializer: initializer))
        count += rows * cols
        return p
    }

    /// Allocates the buffers, initialises every parameter from `seed` and zeroes the gradients.
    public func seal(seed: UInt64) {
        precondition(!isSealed, "store sealed twice")
        let n = max(count, 1)
        let v = Tensor.allocate(n)
        let g = Tensor.allocate(n)
        v.initialize(repeating: 0, count: n)
        g.initialize(repeating: 0, count: n)
        valuesBase = v
        gradientsBase = g
        isSealed = true
        var rng = Xoshiro256(seed: seed)
        for info in infos { fill(v + info.offset, info.count, info.initializer, &rng) }
    }

    private func fill(_ p: UnsafeMutablePointer<Float>, _ n: Int, _ initializer: Initializer,
                      _ rng: inout Xoshiro256) {
        switch initializer {
        case .zeros: p.update(repeating: 0, count: n)
        case .ones: p.update(repeating: 1, count: n)
        case .glorotUniform(let fanIn, let fanOut):
            let a = (6.0 / Float(fanIn + fanOut)).squareRoot()
            for i in 0..<n { p[i] = rng.nextFloat(in: -a, a) }
        case .uniform(let bound):
            for i in 0..<n { p[i] = rng.nextFloat(in: -bound, bound) }
        case .normal(let std):
            for i in 0..<n { p[i] = std * rng.nextNormal() }
        }
    }

    /// The flat parameter buffer (all parameters, in declaration order).
    public var values: UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: sealedValues, count: count)
    }

    /// The flat gradient buffer, same layout as `values`.
    public var gradients: UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: sealedGradients, count: count)
    }

    private var sealedValues: UnsafeMutablePointer<Float> {
        guard let v = valuesBase else { preconditionFailure("parameter store used before seal(seed:)") }
        return v
    }

    private var sealedGradients: UnsafeMutablePointer<Float> {
        guard let g = gradientsBase else { preconditionFailure("parameter store used before seal(seed:)") }
        return g
    }

    /// The value of `p` as a matrix view into the flat buffer.
    @inline(__always)
    public func value(_ p: Param) -> Matrix { Matrix(base: sealedValues + p.offset, rows: p.rows, cols: p.cols) }

    /// The gradient of `p` as a matrix view into the flat gradient buffer.
    @inline(__always)
    public func gradient(_ p: Param) -> Matrix { Matrix(base: sealedGradients + p.offset, rows: p.rows, cols: p.cols) }

    public func zeroGradients() { sealedGradients.update(repeating: 0, count: count) }

    /// Overwrites all values from another flat buffer (e.g. the shared state after a sync).
    public func load(_ source: UnsafeBufferPointer<Float>) {
        precondition(source.count == count, "flat buffer has \(source.count) values, store has \(count)")
        if count > 0 { sealedValues.update(from: source.baseAddress!, count: count) }
    }

    public func info(named name: String) -> ParameterInfo? { infos.first { $0.name == name } }
}
