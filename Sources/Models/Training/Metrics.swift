/// An evaluation result: the task's metric (accuracy or RMSE) and the mean loss.
public struct Metrics: Sendable, CustomStringConvertible {
    public let name: String
    public let value: Double
    public let loss: Double
    public let higherIsBetter: Bool

    public init(name: String, value: Double, loss: Double, higherIsBetter: Bool) {
        self.name = name
        self.value = value
        self.loss = loss
        self.higherIsBetter = higherIsBetter
    }

    public var description: String { "\(name) \(value) (loss \(loss))" }

    /// Whether `self` is better than `other` on the metric.
    public func isBetter(than other: Metrics) -> Bool {
        higherIsBetter ? value > other.value : value < other.value
    }
}
