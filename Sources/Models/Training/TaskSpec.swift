/// Everything needed to build the same training task on any peer.
public struct TaskSpec: Sendable {
    public var model: ModelKind
    public var dataset: String
    /// Directory to read the dataset from instead of the shipped copy (never required: every
    /// dataset ships with the module).
    public var dataDirectory: String?
    /// The layout of a user's own data in `dataDirectory`, when its files cannot tell
    /// (`DataFormat.resolve`).
    public var dataFormat: DataFormat?
    public var shard: Shard
    /// Shared by all peers: fixes the initial parameters and the shard permutation. Batch order
    /// and dropout are drawn from it mixed with the shard index, so peers see different batches.
    public var seed: UInt64
    /// Molecules only: train/validate/test on the Bemis–Murcko scaffold split instead of the
    /// random one (harder: test molecules have scaffolds never seen in training).
    public var scaffoldSplit: Bool

    public init(model: ModelKind, dataset: String? = nil, dataDirectory: String? = nil,
                shard: Shard = .whole, seed: UInt64 = 0, scaffoldSplit: Bool = false, dataFormat: DataFormat? = nil) {
        self.model = model
        self.dataset = dataset ?? model.defaultDataset
        self.dataDirectory = dataDirectory
        self.shard = shard
        self.seed = seed
        self.scaffoldSplit = scaffoldSplit
        self.dataFormat = dataFormat
    }

    var streamSeed: UInt64 { seed ^ (UInt64(shard.index) &* 0x9E37_79B9_7F4A_7C15) }
}

/// Why a task could not be built.
public struct TaskError: Error, CustomStringConvertible, Sendable {
    public let description: String
}
