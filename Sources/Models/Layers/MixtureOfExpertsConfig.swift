/// Hyper-parameters of a mixture-of-experts block.
public struct MixtureOfExpertsConfig: Sendable {
    public var experts = 8
    public var topK = 2
    public var dModel = 64
    public var hidden = 128
    /// Capacity per expert = ceil(capacityFactor · B · k / E) assignments; the rest are dropped
    /// (GShard). The default E/k gives capacity B: no drops, the same maths as dropless routing.
    public var capacityFactor: Float? = nil
    /// Weight of the load-balancing loss in the total loss.
    public var auxCoefficient: Float = 0.01

    public init() {}

    public var effectiveCapacityFactor: Float { capacityFactor ?? Float(experts) / Float(topK) }
}
