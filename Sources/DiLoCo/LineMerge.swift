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

    /// Each part's weight: its peer-steps since the latest point any of the parts parted (for
    /// one fork, exactly the training each side did apart). If no part trained since, the part
    /// of `viewLine` (else the first) alone.
    public static func weights(_ lineages: [Lineage], viewLine: UInt64) -> (base: UInt64, weights: [UInt64]) {
        let base = lineages.map(\.forkBase).max() ?? 0
        var weights = lineages.map { $0.peerSteps > base ? $0.peerSteps - base : 0 }
        if weights.allSatisfy({ $0 == 0 }) {
            let keep = lineages.firstIndex { $0.line == viewLine } ?? 0
            weights = weights.indices.map { $0 == keep ? 1 : 0 }
        }
        return (base, weights)
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
        // The merged history holds all the training of every part since the base.
        let trained = sorted.reduce(UInt64(0)) { $0 + ($1.lineage.peerSteps > base ? $1.lineage.peerSteps - base : 0) }
        out.lineage = Lineage(line: viewLine, peerSteps: base + trained, forkBase: base,
                              ancestors: Lineage.newest(ancestors.filter { $0.line != viewLine }))
        out.setRevision((sorted.map(\.state.revision).max() ?? 0) + 1)
    }
}
