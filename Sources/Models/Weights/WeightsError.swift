/// Why weights could not be written or taken: one line naming the file and what is wrong, so an
/// operator handed a file from elsewhere sees the first mismatch, not a trap or a stack trace.
public struct WeightsError: Error, CustomStringConvertible, Equatable, Sendable {
    public let description: String

    public init(_ description: String) { self.description = description }
}
