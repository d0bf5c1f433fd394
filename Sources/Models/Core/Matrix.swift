/// A row-major `rows × cols` view over `Float` memory owned by someone else (a `Tensor` or the
/// flat buffers of a `ParameterStore`).
///
/// Layers pass these views between each other instead of arrays so that a training step moves no
/// reference counts and allocates nothing: the memory behind a view stays put until its owner is
/// resized, which only happens when a larger batch than ever before arrives.
public struct Matrix {
    public let base: UnsafeMutablePointer<Float>
    public let rows: Int
    public let cols: Int

    @inlinable
    public init(base: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
        precondition(rows >= 0 && cols >= 0, "negative matrix dimension")
        self.base = base
        self.rows = rows
        self.cols = cols
    }

    @inlinable public var count: Int { rows &* cols }

    /// Pointer to the first element of row `r`.
    @inlinable
    public func row(_ r: Int) -> UnsafeMutablePointer<Float> { base + r &* cols }

    @inlinable
    public subscript(r: Int, c: Int) -> Float {
        get { base[r &* cols &+ c] }
        nonmutating set { base[r &* cols &+ c] = newValue }
    }

    /// The same memory seen with another shape of the same element count.
    @inlinable
    public func reshaped(rows: Int, cols: Int) -> Matrix {
        precondition(rows * cols == count, "reshape must keep the element count")
        return Matrix(base: base, rows: rows, cols: cols)
    }

    /// Sets every element to zero.
    @inlinable
    public func zero() { base.update(repeating: 0, count: count) }

    /// Copies the elements into a fresh array (tests and reporting, never in a training step).
    public func toArray() -> [Float] { Array(UnsafeBufferPointer(start: base, count: count)) }
}
