import Collectives

/// Which history of training a shared state holds, stored in the state itself (tensor
/// "lineage", so digests and downloads cover it): the membership line it was last advanced in,
/// how much training it contains, and the lines whose progress it already includes. The sync
/// uses it to tell a state that is merely behind from one that trained apart in another line
/// and must be merged (docs/diloco.md, "Merging two lines").
public struct Lineage: Hashable, Sendable {
    /// The membership line of the last outer step (0: never stepped).
    public var line: UInt64 = 0
    /// Pseudo-gradients averaged into θ so far, summed over outer steps: "peer-steps".
    public var peerSteps: UInt64 = 0
    /// `peerSteps` when this history parted from the others (its fork, or the base of its
    /// last merge).
    public var forkBase: UInt64 = 0
    /// Histories this one contains, as (line, peer-steps reached in it): the line it forked
    /// from, and the lines merged into it. The newest `maxAncestors` by peer-steps.
    public var ancestors: [Ancestor] = []

    public struct Ancestor: Hashable, Sendable {
        public var line: UInt64
        public var peerSteps: UInt64
        public init(line: UInt64, peerSteps: UInt64) {
            self.line = line
            self.peerSteps = peerSteps
        }
    }

    public static let maxAncestors = 8
    /// line, peerSteps, forkBase, count, then `maxAncestors` (line, peerSteps) pairs: i64 each.
    public static let words = 4 + 2 * maxAncestors
    public static let byteCount = words * 8
    public static let spec = TensorSpec(name: "lineage", dtype: .i64, shape: [words])

    public init(line: UInt64 = 0, peerSteps: UInt64 = 0, forkBase: UInt64 = 0, ancestors: [Ancestor] = []) {
        self.line = line
        self.peerSteps = peerSteps
        self.forkBase = forkBase
        self.ancestors = ancestors
    }

    /// Little-endian words, the state's layout on every host.
    public var bytes: [UInt8] {
        var words: [UInt64] = [line, peerSteps, forkBase, UInt64(ancestors.count)]
        for a in ancestors.prefix(Self.maxAncestors) { words += [a.line, a.peerSteps] }
        words += [UInt64](repeating: 0, count: Self.words - words.count)
        var out: [UInt8] = []
        out.reserveCapacity(Self.byteCount)
        for w in words { withUnsafeBytes(of: w.littleEndian) { out += $0 } }
        return out
    }

    /// Decodes `byteCount` bytes; a count out of range reads as no ancestors.
    public init(bytes: some Collection<UInt8>) {
        let raw = Array(bytes.prefix(Self.byteCount))
        func word(_ i: Int) -> UInt64 {
            guard (i + 1) * 8 <= raw.count else { return 0 }
            return raw[(i * 8)..<(i * 8 + 8)].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        }
        line = word(0)
        peerSteps = word(1)
        forkBase = word(2)
        let count = Int(min(word(3), UInt64(Self.maxAncestors)))
        ancestors = (0..<count).map { Ancestor(line: word(4 + 2 * $0), peerSteps: word(5 + 2 * $0)) }
    }

    /// Never stepped: a fresh peer's state, behind every other.
    public var isBlank: Bool { line == 0 && peerSteps == 0 }

    /// True when `other` already holds everything this history holds: the same line at least
    /// as far, or this line as an ancestor reached at least as far.
    public func isContained(in other: Lineage) -> Bool {
        if isBlank { return true }
        if other.line == line { return other.peerSteps >= peerSteps }
        return other.ancestors.contains { $0.line == line && $0.peerSteps >= peerSteps }
    }

    /// After one outer step in membership line `viewLine` that averaged `contributors`
    /// pseudo-gradients. A step in another line than the last one means this history forked
    /// (the members that went on apart from the rest): the old line becomes an ancestor.
    public func advanced(line viewLine: UInt64, contributors: Int) -> Lineage {
        var next = self
        if viewLine != line {
            if !isBlank { next.ancestors = Self.newest(ancestors + [Ancestor(line: line, peerSteps: peerSteps)]) }
            next.forkBase = peerSteps
            next.line = viewLine
        }
        next.peerSteps = peerSteps &+ UInt64(max(contributors, 0))
        return next
    }

    /// The newest `maxAncestors` entries, one per line (the furthest), by peer-steps.
    static func newest(_ list: [Ancestor]) -> [Ancestor] {
        var best: [UInt64: UInt64] = [:]
        for a in list { best[a.line] = max(best[a.line] ?? 0, a.peerSteps) }
        return best.map { Ancestor(line: $0.key, peerSteps: $0.value) }
            .sorted { ($0.peerSteps, $0.line) > ($1.peerSteps, $1.line) }
            .prefix(maxAncestors).map { $0 }
    }
}

extension SharedState {
    /// The state's lineage (a state without the tensor reads as blank and ignores writes).
    public var lineage: Lineage {
        get {
            guard let raw = bytes(Lineage.spec.name), raw.count == Lineage.byteCount else { return Lineage() }
            return Lineage(bytes: UnsafeRawBufferPointer(raw))
        }
        set {
            guard let raw = bytes(Lineage.spec.name), raw.count == Lineage.byteCount else { return }
            newValue.bytes.withUnsafeBytes { raw.copyMemory(from: $0) }
        }
    }
}
