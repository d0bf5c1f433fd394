/// An owning, growable `Float` buffer with a 2-D shape.
///
/// Layers keep their activations and input gradients in tensors that are resized at each step
/// to the batch at hand. Resizing reallocates only when the new element count exceeds every
/// count seen before, so once the largest batch has passed through, steps allocate nothing.
/// Memory is 64-byte aligned for the vector kernels and OpenBLAS.
public final class Tensor {
    public private(set) var base: UnsafeMutablePointer<Float>
    public private(set) var capacity: Int
    public private(set) var rows: Int
    public private(set) var cols: Int

    public init(rows: Int = 0, cols: Int = 0) {
        precondition(rows >= 0 && cols >= 0, "negative tensor dimension")
        capacity = max(rows * cols, 16)
        base = Tensor.allocate(capacity)
        self.rows = rows
        self.cols = cols
        base.initialize(repeating: 0, count: capacity)
    }

    /// A tensor holding a copy of `values` as a `rows × cols` matrix.
    public convenience init(rows: Int, cols: Int, values: [Float]) {
        precondition(values.count == rows * cols, "value count does not match the shape")
        self.init(rows: rows, cols: cols)
        values.withUnsafeBufferPointer { base.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit { base.deallocate() }

    public var count: Int { rows * cols }
    public var shape: [Int] { [rows, cols] }
    public var matrix: Matrix { Matrix(base: base, rows: rows, cols: cols) }

    /// Gives the tensor a new shape and returns its view. Contents are unspecified afterwards
    /// unless the element count is unchanged (no copy is made when growing).
    @discardableResult
    public func resize(rows: Int, cols: Int) -> Matrix {
        precondition(rows >= 0 && cols >= 0, "negative tensor dimension")
        let needed = rows * cols
        if needed > capacity {
            base.deallocate()
            capacity = max(needed, capacity * 3 / 2)
            base = Tensor.allocate(capacity)
            base.initialize(repeating: 0, count: capacity)
        }
        self.rows = rows
        self.cols = cols
        return matrix
    }

    /// Resizes and zero-fills.
    @discardableResult
    public func resizeZeroed(rows: Int, cols: Int) -> Matrix {
        let m = resize(rows: rows, cols: cols)
        m.zero()
        return m
    }

    public func toArray() -> [Float] { matrix.toArray() }

    static func allocate(_ count: Int) -> UnsafeMutablePointer<Float> {
        UnsafeMutableRawPointer.allocate(byteCount: count * MemoryLayout<Float>.stride, alignment: 64)
            .bindMemory(to: Float.self, capacity: count)
    }
}
