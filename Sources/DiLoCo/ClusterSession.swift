import Foundation
import Collectives

/// What DiLoCo needs from the cluster, so that the training loop does not depend on how
/// membership is run (the daemon backs it with the membership layer; tests and fixed clusters
/// with ``FixedRingSession``).
public protocol ClusterSession: AnyObject, Sendable {
    /// Phase 1 of a step: admit joiners, drop the departed, form the ring. Returns the view size.
    func updateTopology() async throws -> Int
    /// After a collective aborted: form the ring again from the surviving members only (no
    /// joiner may enter in the middle of a step: it has no pseudo-gradient to give).
    func recover() async throws -> Int
    /// Phase 2: make `state` the cluster's canonical shared state (download it if behind).
    func syncSharedState(_ state: SharedState) async throws
    /// Phase 2 of the one-step-delayed mode: as ``syncSharedState(_:)``, and every member also
    /// tells whether it holds a pseudo-gradient for the all-reduce that follows (a peer admitted
    /// at this update point does not). Returns the same counts on every member.
    func syncSharedState(_ state: SharedState, contributing: Bool) async throws -> Contributors
    /// Phase 3: all-reduce on the current ring.
    func allReduce(input: UnsafeRawBufferPointer, output: UnsafeMutableRawBufferPointer, type: DType,
                   options: AllReduceOptions) async throws
    /// Runs a change of the shared state so that nobody reads it half-changed (donors serving it).
    func updatingState<T>(_ body: () throws -> T) rethrows -> T
    /// The membership line of the current ring (docs/membership.md, "Lines"); 0 without lines.
    var line: UInt64 { get }
}

extension ClusterSession {
    public func updatingState<T>(_ body: () throws -> T) rethrows -> T { try body() }
}

/// The outcome of a delayed-mode sync: the ring's size and how many of its members hold a
/// pseudo-gradient to average.
public struct Contributors: Sendable, Equatable {
    public var members: Int
    public var contributing: Int

    public init(members: Int, contributing: Int) {
        self.members = members
        self.contributing = contributing
    }
}

/// A ring whose members never change: topology updates are no-ops, and the shared-state sync
/// checks parity (every member must already hold the same state, e.g. from the same seed or the
/// same checkpoint) instead of transferring it.
public final class FixedRingSession: ClusterSession, @unchecked Sendable {
    public let communicator: Communicator
    public let size: Int
    private let lock = NSLock()
    private var checks: UInt64 = 0

    /// The membership line every step of this ring is taken in (``ClusterSession/line``): 0, no
    /// lines, unless a caller stands for the lines of a cluster that split (a benchmark of the line
    /// merge gives the two sides of a split two rings with distinct lines, so that the trainer
    /// records the fork in the lineage as the daemon does).
    public let line: UInt64

    public init(communicator: Communicator, size: Int, line: UInt64 = 0) {
        self.communicator = communicator
        self.size = size
        self.line = line
    }

    public func updateTopology() async throws -> Int { size }

    public func recover() async throws -> Int {
        throw CollectiveError(code: .membershipChanged, message: "a member of a fixed ring is gone; the run cannot go on")
    }

    /// All-reduces the digest bytes with min and max: equal results mean every member holds the
    /// same state and revision.
    public func syncSharedState(_ state: SharedState) async throws {
        try await parityCheck(state, contributing: false)
    }

    /// Nobody joins a fixed ring, so every member holds a pseudo-gradient or none does (the run's
    /// first step); the flag rides along with the digest and must agree too.
    public func syncSharedState(_ state: SharedState, contributing: Bool) async throws -> Contributors {
        try await parityCheck(state, contributing: contributing)
        return Contributors(members: size, contributing: contributing ? size : 0)
    }

    private func parityCheck(_ state: SharedState, contributing: Bool) async throws {
        var digest = state.digest().bytes.map { Int32($0) }
        digest.append(Int32(truncatingIfNeeded: state.revision))
        digest.append(contributing ? 1 : 0)
        var low = digest
        var high = digest
        // Numbered by the checks so far: every member of a fixed ring runs the same steps, so the
        // same count, and a member that ran one check more times out instead of mixing them.
        let sequence = lock.withLock { () -> UInt64 in
            checks += 1
            return checks
        }
        try await communicator.allReduce(&low, options: AllReduceOptions(id: CollectiveID(purpose: .parityLow, sequence: sequence), op: .min))
        try await communicator.allReduce(&high, options: AllReduceOptions(id: CollectiveID(purpose: .parityHigh, sequence: sequence), op: .max))
        guard low.dropLast() == high.dropLast() else {
            throw CollectiveError(code: .protocolViolation,
                                  message: "members of the fixed ring hold different shared states (revision \(state.revision), digest \(state.digest().short))")
        }
        guard low.last == high.last else {
            throw CollectiveError(code: .protocolViolation,
                                  message: "members of the fixed ring disagree on whether they hold a pseudo-gradient (different DiLoCo modes?)")
        }
    }

    public func allReduce(input: UnsafeRawBufferPointer, output: UnsafeMutableRawBufferPointer, type: DType,
                          options: AllReduceOptions) async throws {
        try await communicator.allReduce(input: input, output: output, type: type, options: options)
    }
}
