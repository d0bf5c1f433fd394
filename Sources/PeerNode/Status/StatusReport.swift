import Foundation

/// The `/status` document. One Codable type serves the server, `peernode status` and the tests, so
/// the three cannot drift apart; keys are snake_case on the wire, like the `outer` stdout lines.
///
/// Node ids are 16-digit hex strings (as in the logs): JSON numbers lose precision above 2^53 in
/// JavaScript, and the page is JavaScript.
struct StatusReport: Codable, Sendable {
    /// One node of the committed view, in view order (ring ranks and the failover order follow it).
    struct Member: Codable, Sendable {
        var id: String
        var control: String
        var data: String
        /// False for a coordinate-only node: it votes but holds no ring position.
        var inRing: Bool
        var isCoordinator: Bool
        var isSelf: Bool
    }

    /// What one outer step did, with the traffic totals sampled right after it.
    struct Step: Codable, Sendable {
        var revision: UInt64
        /// Seconds since 1970, so the page and `peernode status` can show when it happened.
        var time: Double
        var loss: Double
        var metric: Double
        var digest: String
        var peers: Int
        var retries: Int
        var innerSeconds: Double
        var communicationSeconds: Double
        var bytesSent: UInt64
        var bytesReceived: UInt64
        /// Traffic since the previous recorded step over the wall time between the two (the
        /// first step: since the node started).
        var sentBytesPerSecond: Double
        var receivedBytesPerSecond: Double
    }

    struct Events: Codable, Sendable {
        var joins: Int
        var leaves: Int
        var deaths: Int
        var aborts: Int
        var retries: Int
    }

    /// One membership event as the node published it (``MembershipEvent``), for operators who
    /// want to know what happened between two looks at the page: views, roles, rejoins, forks.
    struct MembershipLogEntry: Codable, Sendable, Equatable {
        /// Seconds since 1970.
        var time: Double
        /// view, role, joiners-waiting or no-quorum.
        var kind: String
        var detail: String
    }

    struct Throughput: Codable, Sendable {
        var lastStepSentBytesPerSecond: Double
        var lastStepReceivedBytesPerSecond: Double
        var overallSentBytesPerSecond: Double
        var overallReceivedBytesPerSecond: Double
    }

    var id: String
    var version: String
    var role: String
    /// False (with `health` saying why) unless the node runs and is a member of the view.
    var healthy: Bool
    var health: String
    /// Link security: `psk` (TLS 1.3 keyed by the cluster key), `certificate` (mutual TLS) or
    /// `off` (`--plaintext`).
    var tls: String
    var epoch: UInt64
    /// The history this node's view belongs to (docs/membership.md, "Lines").
    var line: String
    var coordinator: String?
    var members: [Member]
    var revision: UInt64
    var digest: String?
    var model: String
    var dataset: String
    /// Name of the evaluation metric in `history[].metric` (accuracy, RMSE, ...).
    var metricName: String?
    var higherIsBetter: Bool?
    var peers: Int
    var uptimeSeconds: Double
    var bytesSent: UInt64
    var bytesReceived: UInt64
    var throughput: Throughput
    var events: Events
    /// The newest membership events, oldest first (at most ``StatusRecorder/membershipLogCapacity``);
    /// absent in the answers of older versions.
    var membershipLog: [MembershipLogEntry]?
    /// The last steps, oldest first: all that are kept, or those after `?since=REVISION`.
    var history: [Step]
    /// How many steps the node keeps; older ones are dropped.
    var historyCapacity: Int

    static let version = "0.1.0"

    static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        // A diverging run has NaN losses; JSON has no NaN, and refusing to answer would hide it.
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return encoder
    }

    static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(
            positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return decoder
    }
}
