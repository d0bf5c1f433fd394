/// What the distributed layer sees of a model: flat parameter and gradient buffers, a step
/// that computes the loss and gradients of the next local batch, and an evaluation.
///
/// The model owns its data shard and batch order (seeded), so a step needs no arguments and the
/// sequence of batches is a pure function of the seed. The optimizer is kept apart (see
/// `TrainingTask`): DiLoCo runs AdamW inside and its own outer step on `parameters.values`.
public protocol TrainableModel: AnyObject {
    var parameters: ParameterStore { get }
    /// Number of training examples (nodes, molecules, images) in this peer's shard.
    var trainingExampleCount: Int { get }
    /// Batches per pass over the shard.
    var stepsPerEpoch: Int { get }
    /// Overwrites `parameters.gradients` with the gradient of the loss on the next batch of the
    /// local shard and returns that loss.
    func trainStep() -> Float
    /// Metric and loss on a split (no parameter change; batch statistics are not updated).
    func evaluate(_ split: DataSplit) -> Metrics
}
