/// A peer's part of a training set: the training indices are permuted with a seed that all
/// peers share, and peer i of N takes the i-th contiguous block of that permutation. Blocks are
/// disjoint and cover the set, and differ in size by at most one.
public struct Shard: Sendable, Equatable {
    public let index: Int
    public let count: Int

    public init(index: Int, count: Int) {
        precondition(count >= 1 && index >= 0 && index < count, "shard \(index) of \(count) is invalid")
        self.index = index
        self.count = count
    }

    public static let whole = Shard(index: 0, count: 1)

    /// This shard's elements of `items`. `seed` must be the same on every peer.
    public func select<T>(_ items: [T], seed: UInt64) -> [T] {
        if count == 1 { return items }
        var rng = Xoshiro256(seed: seed, stream: 0x5348_4152_44)  // "SHARD"
        let perm = rng.permutation(items.count)
        let lo = index * items.count / count, hi = (index + 1) * items.count / count
        return perm[lo..<hi].sorted().map { items[$0] }
    }
}

/// Endless epochs of shuffled mini-batches over a fixed list of example indices.
/// The index buffer is reused, so sampling allocates nothing after the first epoch.
public struct BatchSampler: Sendable {
    public let indices: [Int]
    public let batchSize: Int
    /// Drop a last partial batch (as the MoE reference does) or keep it.
    public let dropLast: Bool
    private var order: [Int]
    private var position: Int
    private var rng: Xoshiro256
    public private(set) var epoch = 0

    public init(indices: [Int], batchSize: Int, dropLast: Bool, seed: UInt64) {
        precondition(!indices.isEmpty, "no training examples in this shard")
        self.indices = indices
        self.batchSize = max(1, min(batchSize, indices.count))
        self.dropLast = dropLast
        order = indices
        rng = Xoshiro256(seed: seed, stream: 0x4241_5443_48)  // "BATCH"
        position = indices.count  // shuffle on first use
        epoch = -1
    }

    public var batchesPerEpoch: Int {
        dropLast ? indices.count / batchSize : (indices.count + batchSize - 1) / batchSize
    }

    /// The next batch (a slice of the internal order, valid until the next call).
    public mutating func next() -> ArraySlice<Int> {
        let remaining = order.count - position
        if remaining == 0 || (dropLast && remaining < batchSize) {
            rng.shuffle(&order)
            position = 0
            epoch += 1
        }
        let end = min(position + batchSize, order.count)
        defer { position = end }
        return order[position..<end]
    }
}
