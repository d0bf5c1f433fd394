/// A model's parameters as named safetensors entries: one F32 tensor per parameter the model
/// declares (`ParameterStore.infos`), with the declared shape, in and out of the flat parameter
/// vector the distributed layer works on (θ).
///
/// Names, shapes and the dtype must all match the model, and every one of its parameters must
/// be present, because a file that merely has the right total size could still put a layer's
/// weights in another's place; extra tensors are refused for the same reason.
public enum ModelWeights {
    /// A safetensors file of `flat` (θ in `ParameterStore` order) for a model with `infos`.
    public static func encode(_ flat: UnsafeBufferPointer<Float>, infos: [ParameterInfo],
                              metadata: [String: String]) throws -> [UInt8] {
        let total = infos.reduce(0) { $0 + $1.count }
        guard flat.count == total else {
            throw WeightsError("the vector holds \(flat.count) values; the model's parameters need \(total)")
        }
        let tensors = infos.map { info in
            var bytes = [UInt8]()
            bytes.reserveCapacity(info.count * 4)
            for v in flat[info.offset..<(info.offset + info.count)] {
                withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 }
            }
            return SafeTensorsFile.Tensor(name: info.name, dtype: "F32", shape: info.shape, bytes: bytes)
        }
        return try SafeTensorsFile.encode(tensors, metadata: metadata)
    }

    /// Reads `path` and returns θ for a model with `infos`, after checking every name, shape
    /// and dtype; the first mismatch is the error.
    public static func read(_ path: String, infos: [ParameterInfo]) throws -> (flat: [Float], metadata: [String: String]) {
        let total = infos.reduce(0) { $0 + $1.count }
        let (tensors, metadata) = try SafeTensorsFile.read(path, maximumDataBytes: total * 4) { entries in
            var byName: [String: SafeTensorsFile.Entry] = [:]
            for e in entries { byName[e.name] = e }
            for info in infos {
                guard let e = byName.removeValue(forKey: info.name) else {
                    throw WeightsError("\(path): missing tensor '\(info.name)' (shape \(info.shape)) that the model declares")
                }
                guard e.dtype == "F32" else { throw WeightsError("\(path): tensor '\(info.name)' is \(e.dtype), the model needs F32") }
                guard e.shape == info.shape else {
                    throw WeightsError("\(path): tensor '\(info.name)' has shape \(e.shape), the model needs \(info.shape)")
                }
            }
            if let extra = byName.keys.sorted().first {
                throw WeightsError("\(path): tensor '\(extra.prefix(80))' is not a parameter of this model (\(byName.count) unknown)")
            }
        }
        var byName: [String: SafeTensorsFile.Tensor] = [:]
        for t in tensors { byName[t.name] = t }
        var flat = [Float](repeating: 0, count: total)
        for info in infos {
            let t = byName[info.name]!  // `check` above found every name with its shape and dtype
            t.bytes.withUnsafeBytes { raw in
                for i in 0..<info.count {
                    let bits = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self))
                    flat[info.offset + i] = Float(bitPattern: bits)
                }
            }
        }
        return (flat, metadata)
    }
}

extension ModelWeights {
    /// Overwrites the model's parameters with the weights in `path` (all checked first: on any
    /// error the parameters are unchanged). Returns the file's metadata.
    ///
    /// Training from a NaN or an infinity can only produce more of them (and routing or
    /// softmax on them is meaningless), so such a file is refused here, naming the tensor;
    /// `read` itself passes every bit pattern through, as an export must.
    @discardableResult
    public static func load(_ path: String, into store: ParameterStore) throws -> [String: String] {
        let (flat, metadata) = try read(path, infos: store.infos)
        for info in store.infos {
            if let i = flat[info.offset..<(info.offset + info.count)].firstIndex(where: { !$0.isFinite }) {
                throw WeightsError("\(path): tensor '\(info.name)' holds \(flat[i]) at element \(i - info.offset); "
                                   + "training cannot start from non-finite weights")
            }
        }
        flat.withUnsafeBufferPointer { store.load($0) }
        return metadata
    }
}
