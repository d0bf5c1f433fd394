/// A sparse matrix in compressed sparse row form (row pointers, column indices, values).
///
/// Used for bag-of-words node features and for graph adjacency (row = destination node,
/// column = source node). It is a class so that dropout can rewrite the values of its own
/// copy in place every step without copy-on-write allocations; the structure arrays are
/// immutable and shared between copies.
public final class CSRMatrix {
    public internal(set) var rows: Int
    public internal(set) var cols: Int
    public internal(set) var rowPointers: [Int32]
    public internal(set) var columnIndices: [Int32]
    public var values: [Float]

    public var nonZeroCount: Int { columnIndices.count }

    public init(rows: Int, cols: Int, rowPointers: [Int32], columnIndices: [Int32], values: [Float]) {
        precondition(rowPointers.count == rows + 1, "CSR needs rows + 1 row pointers")
        precondition(columnIndices.count == values.count, "CSR needs one value per column index")
        precondition(rowPointers.first == 0 && Int(rowPointers.last!) == values.count, "CSR row pointers inconsistent")
        self.rows = rows
        self.cols = cols
        self.rowPointers = rowPointers
        self.columnIndices = columnIndices
        self.values = values
    }

    /// Builds a CSR matrix from coordinate triples (duplicates are summed in order).
    public convenience init(rows: Int, cols: Int, rowIndices: [Int32], columnIndices: [Int32], values: [Float]) {
        precondition(rowIndices.count == columnIndices.count && columnIndices.count == values.count)
        var counts = [Int32](repeating: 0, count: rows + 1)
        for r in rowIndices {
            precondition(r >= 0 && Int(r) < rows, "row index out of range")
            counts[Int(r) + 1] += 1
        }
        for i in 0..<rows { counts[i + 1] += counts[i] }
        var next = counts
        var cols32 = [Int32](repeating: 0, count: values.count)
        var vals = [Float](repeating: 0, count: values.count)
        for k in 0..<values.count {
            let r = Int(rowIndices[k])
            let p = Int(next[r])
            next[r] += 1
            precondition(columnIndices[k] >= 0 && Int(columnIndices[k]) < cols, "column index out of range")
            cols32[p] = columnIndices[k]
            vals[p] = values[k]
        }
        self.init(rows: rows, cols: cols, rowPointers: counts, columnIndices: cols32, values: vals)
    }

    /// Empties the matrix for an in-place rebuild that keeps the arrays' capacity (per-batch
    /// graphs are rebuilt every step without allocating once the largest batch has been seen).
    func clear(rows: Int, cols: Int) {
        self.rows = rows
        self.cols = cols
        rowPointers.removeAll(keepingCapacity: true)
        columnIndices.removeAll(keepingCapacity: true)
        values.removeAll(keepingCapacity: true)
        rowPointers.append(0)
    }

    /// A matrix with the same structure and its own copy of the values.
    public func withSameStructure() -> CSRMatrix {
        CSRMatrix(rows: rows, cols: cols, rowPointers: rowPointers, columnIndices: columnIndices,
                  values: Array(values))
    }

    /// The transpose, as a new CSR matrix.
    public func transposed() -> CSRMatrix {
        var r = [Int32](), c = [Int32](), v = [Float]()
        r.reserveCapacity(nonZeroCount); c.reserveCapacity(nonZeroCount); v.reserveCapacity(nonZeroCount)
        for i in 0..<rows {
            for k in Int(rowPointers[i])..<Int(rowPointers[i + 1]) {
                r.append(columnIndices[k]); c.append(Int32(i)); v.append(values[k])
            }
        }
        return CSRMatrix(rows: cols, cols: rows, rowIndices: r, columnIndices: c, values: v)
    }

    /// Dense copy (tests only).
    public func dense() -> [Float] {
        var d = [Float](repeating: 0, count: rows * cols)
        for i in 0..<rows {
            for k in Int(rowPointers[i])..<Int(rowPointers[i + 1]) { d[i * cols + Int(columnIndices[k])] += values[k] }
        }
        return d
    }
}
