/// The model families the daemon can train.
public enum ModelKind: String, CaseIterable, Sendable {
    case gcn, gin, moe

    /// The dataset used when none is named (all of them ship with the module).
    public var defaultDataset: String {
        switch self {
        case .gcn: "cora"
        case .gin: "esol"
        case .moe: "digits"
        }
    }

    public var datasets: [String] {
        switch self {
        case .gcn: ["cora", "citeseer"]
        case .gin: ["esol", "freesolv", "lipophilicity"]
        case .moe: ["digits", "mnist5k"]
        }
    }

    /// Epochs of the model's standard schedule on `dataset`: what `peernode train` runs when no
    /// step count is given, and what the figures in docs/models.md were measured with. GCN: 200
    /// full-graph steps (Kipf & Welling); GIN: 100 epochs; MoE: 40 epochs on digits, 20 on
    /// mnist5k and on a user's own data (a larger set needs fewer passes).
    public func standardEpochs(dataset: String) -> Int {
        switch self {
        case .gcn: 200
        case .gin: 100
        case .moe: dataset == "digits" ? 40 : 20
        }
    }

    /// `standardEpochs` as text for help screens.
    public static var standardScheduleSummary: String {
        "gcn 200 epochs (one full-graph step each), gin 100 epochs, moe 40 epochs on digits and 20 on mnist5k or your own data"
    }
}
