/// What a ring connection's handshake carries (`info`, docs/protocol.md §3): the epoch of the
/// ring it belongs to and which of the neighbours' parallel TCP streams it is.
///
/// Ten bytes: epoch (u64 big-endian), stream index (u8), stream count (u8). Eight bytes (the
/// epoch alone, the first version of the protocol) mean stream 0 of 1.
struct RingLinkInfo: Equatable {
    var epoch: UInt64
    var stream: Int
    var streams: Int

    init(epoch: UInt64, stream: Int, streams: Int) {
        self.epoch = epoch
        self.stream = stream
        self.streams = streams
    }

    init?(_ bytes: [UInt8]) {
        guard bytes.count == 8 || bytes.count == 10 else { return nil }
        epoch = bytes[0..<8].reduce(0) { $0 << 8 | UInt64($1) }
        stream = bytes.count == 10 ? Int(bytes[8]) : 0
        streams = bytes.count == 10 ? Int(bytes[9]) : 1
        guard (1...CommunicatorOptions.maxStreams).contains(streams), stream < streams else { return nil }
    }

    var bytes: [UInt8] {
        withUnsafeBytes(of: epoch.bigEndian) { Array($0) } + [UInt8(stream), UInt8(streams)]
    }
}
