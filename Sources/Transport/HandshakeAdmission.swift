import Foundation

/// Connections of one listening port that have not finished the handshake: at most `total`,
/// and at most `perAddress` from one source address. The excess is refused at accept, before
/// any byte is read, so that strangers cannot hold a port's slots (or a thread or buffer each)
/// while its members' connections wait; what the admitted ones may hold is bounded by the
/// handshake deadline. Memory: one counter per source address with a connection in progress.
public final class HandshakeAdmission: @unchecked Sendable {
    public let total: Int
    public let perAddress: Int
    private let lock = NSLock()
    private var inProgress = 0
    private var byAddress: [String: Int] = [:]

    public init(total: Int, perAddress: Int) {
        self.total = max(1, total)
        self.perAddress = max(1, perAddress)
    }

    public enum Refusal: Sendable, Equatable, CustomStringConvertible {
        case portFull(Int)
        case addressFull(Int)
        public var description: String {
            switch self {
            case .portFull(let n): "\(n) handshakes already in progress on this port"
            case .addressFull(let n): "\(n) handshakes already in progress from this address"
            }
        }
    }

    /// Takes a slot for a connection from `address`, or says why not. Each success must be
    /// paired with one ``release(_:)``.
    public func admit(_ address: String) -> Refusal? {
        lock.withLock {
            guard inProgress < total else { return .portFull(inProgress) }
            let mine = byAddress[address, default: 0]
            guard mine < perAddress else { return .addressFull(mine) }
            inProgress += 1
            byAddress[address] = mine + 1
            return nil
        }
    }

    public func release(_ address: String) {
        lock.withLock {
            inProgress = max(0, inProgress - 1)
            let left = byAddress[address, default: 1] - 1
            byAddress[address] = left > 0 ? left : nil
        }
    }

    /// Handshakes in progress now (for tests and logs).
    public var count: Int { lock.withLock { inProgress } }
}
