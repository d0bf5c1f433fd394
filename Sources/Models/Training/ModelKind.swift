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
}
