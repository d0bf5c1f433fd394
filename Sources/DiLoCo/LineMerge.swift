import Collectives

/// The state of two or more lines of the cluster that met again, merged into one (docs/diloco.md,
/// "Merging two lines"): every f32 tensor (θ and the outer momentum) is the average of the
/// lines' tensors weighted by the peer-steps each line trained since they parted.
///
/// Every member computes it from the same verified inputs in plain scalar arithmetic, in the
/// order of the line ids, so every member gets the same bits, as with the outer step: it is
/// computed once per member instead of once and sent, which costs the same one download each.
public enum LineMerge {
    public struct Part {
        public var state: SharedState
        public var lineage: Lineage
        public init(state: SharedState, lineage: Lineage) {
            self.state = state
            self.lineage = lineage
        }
    }

    /// Each part's weight: its peer-steps since it parted from the nearest of the other parts
    /// (for one fork, exactly the training each side did apart). Parts that share a stretch of
    /// history after parting from a third (two forks of one fork, say) each count only what they
    /// did after parting from each other, so the third's own training is not cut short and the
    /// shared stretch, already inside both, is not counted twice. `base`: the latest parting point.
    /// If no part trained since, the part of `viewLine` (else the first) alone.
    public static func weights(_ lineages: [Lineage], viewLine: UInt64) -> (base: UInt64, weights: [UInt64]) {
        var (base, weights) = apart(lineages)
        if weights.allSatisfy({ $0 == 0 }) {
            let keep = lineages.firstIndex { $0.line == viewLine } ?? 0
            weights = weights.indices.map { $0 == keep ? 1 : 0 }
        }
        return (base, weights)
    }

    /// Each part's peer-steps since it parted from the nearest other part, and the latest parting.
    static func apart(_ lineages: [Lineage]) -> (base: UInt64, steps: [UInt64]) {
        let bases = lineages.indices.map { i in
            lineages.indices.filter { $0 != i }.map { parting(lineages[i], lineages[$0]) }.max() ?? lineages[i].forkBase
        }
        return (bases.max() ?? 0, zip(lineages, bases).map { $0.peerSteps > $1 ? $0.peerSteps - $1 : 0 })
    }

    /// The peer-steps up to which two histories are one: over every line both went through
    /// (a history's own line counts at its current peer-steps, an ancestor at the peer-steps it
    /// had when the history left it), the latest point both still shared.
    static func parting(_ a: Lineage, _ b: Lineage) -> UInt64 {
        func reach(_ l: Lineage) -> [UInt64: UInt64] {
            var out = [l.line: l.peerSteps]
            for ancestor in l.ancestors { out[ancestor.line] = max(out[ancestor.line] ?? 0, ancestor.peerSteps) }
            return out
        }
        let (ra, rb) = (reach(a), reach(b))
        // Histories with no line in common (their records of it were dropped, or they never
        // met): the later of their last partings, as before lines were tracked.
        return ra.compactMap { line, steps in rb[line].map { min(steps, $0) } }.max() ?? max(a.forkBase, b.forkBase)
    }

    /// Writes the merge of `parts` (sorted by line id here) into `out`, which has their layout:
    /// revision one past the newest part, lineage in `viewLine` containing every part.
    public static func merge(_ parts: [Part], viewLine: UInt64, into out: SharedState) throws {
        let sorted = parts.sorted { $0.lineage.line < $1.lineage.line }
        guard let first = sorted.first else { return }
        let (base, weights) = weights(sorted.map(\.lineage), viewLine: viewLine)
        let total = Double(weights.reduce(0, +))
        for spec in out.specs where spec.type == .f32 {
            let target = out.floats(spec.name)!
            let inputs = try sorted.map { part -> UnsafeMutableBufferPointer<Float> in
                guard let f = part.state.floats(spec.name), f.count == target.count else {
                    throw SharedState.LayoutError(description: "the states to merge differ in tensor '\(spec.name)'")
                }
                return f
            }
            for i in 0..<target.count {
                var sum = 0.0
                for (k, input) in inputs.enumerated() where weights[k] > 0 { sum = sum + Double(weights[k]) * Double(input[i]) }
                target[i] = Float(sum / total)
            }
        }
        for spec in out.specs where spec.type != .f32 && spec.name != Lineage.spec.name {
            // Nothing but f32 tensors and the lineage today; anything else comes from the first part.
            out.bytes(spec.name)!.copyMemory(from: UnsafeRawBufferPointer(first.state.bytes(spec.name)!))
        }
        var ancestors = sorted.flatMap(\.lineage.ancestors)
        ancestors += sorted.filter { $0.lineage.line != viewLine && !$0.lineage.isBlank }
            .map { Lineage.Ancestor(line: $0.lineage.line, peerSteps: $0.lineage.peerSteps) }
        // The merged history holds all the training of every part since it parted from the others.
        let trained = apart(sorted.map(\.lineage)).steps.reduce(UInt64(0), +)
        out.lineage = Lineage(line: viewLine, peerSteps: base + trained, forkBase: base,
                              ancestors: Lineage.newest(ancestors.filter { $0.line != viewLine }))
        out.setRevision((sorted.map(\.state.revision).max() ?? 0) + 1)
    }
}
