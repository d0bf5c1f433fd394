@testable import Collectives
import Testing

private let nodeA = NodeInfo(id: 1, controlHost: "10.0.0.1", controlPort: 7000, dataHost: "10.0.0.1", dataPort: 7001, inRing: true)
private let nodeB = NodeInfo(id: 0xFFFF_FFFF_FFFF_FFFE, controlHost: "host-b.example", controlPort: 65535,
                             dataHost: "", dataPort: 0, inRing: false)
private let view = MembershipView(epoch: 42, coordinator: 1, nodes: [nodeA, nodeB])

private let samples: [MembershipMessage] = [
    .join(nodeA, settings: "model=moe parameters=42"), .incompatible(reason: "another model"),
    .rejoin(nodeB, epoch: 7, decisions: [.init(key: RoundKey(epoch: 7, tag: 3), commit: true),
                                         .init(key: RoundKey(epoch: 6, collective: CollectiveID(purpose: .syncRecords, point: 4)), commit: false)]),
    .memberHeartbeat(epoch: 3), .updateRequest(epoch: 0),
    .ack(epoch: 43, accepted: true, acked: nil), .ack(epoch: 43, accepted: false, acked: view),
    .leave, .outcome(RoundKey(epoch: 42, collective: CollectiveID(purpose: .pseudoGradient, sequence: CollectiveID.maxSequence, point: .max)), done: false),
    .redirect(id: 1, host: "10.0.0.1", port: 7000), .coordinatorHeartbeat(epoch: 42),
    .propose(view), .commit(view, departed: [5, 6]), .proceed(epoch: 42, point: 3),
    .decision(RoundKey(epoch: 42, tag: 1), commit: true), .removed(reason: "not a member of epoch 42"),
    .links([.init(to: 2, bandwidth: 125_000_000, latencyMicros: 20_000), .init(to: .max, bandwidth: 1, latencyMicros: .max)]),
    .links([]),
    .commit(MembershipView(epoch: 43, coordinator: 1, nodes: [nodeA, nodeB], ringOrder: [1]), departed: []),
]

@Test func aCollectiveSequenceBeyond56BitsIsRefused() throws {
    var bytes = MembershipMessage.outcome(RoundKey(epoch: 1, tag: 1), done: true).encode()
    bytes[10] = 0x01  // the top byte of the sequence (kind 1, epoch 8, purpose 1)
    #expect(throws: MembershipCodecError.self) { try MembershipMessage.decode(bytes) }
}

@Test func everyMessageRoundTrips() throws {
    for message in samples {
        #expect(try MembershipMessage.decode(message.encode()) == message)
    }
}

@Test func truncatedExtendedAndUnknownPayloadsAreRefused() {
    for message in samples {
        let bytes = message.encode()
        for cut in 0..<bytes.count {
            #expect(throws: MembershipCodecError.self) { try MembershipMessage.decode(Array(bytes.prefix(cut))) }
        }
        #expect(throws: MembershipCodecError.self) { try MembershipMessage.decode(bytes + [0]) }
    }
    #expect(throws: MembershipCodecError.self) { try MembershipMessage.decode([99]) }
    // A view claiming 4096 nodes in a few bytes is refused before any allocation.
    var huge = MembershipMessage.propose(MembershipView(epoch: 1, coordinator: 1, nodes: [])).encode()
    huge[huge.count - 2] = 0x10
    huge[huge.count - 1] = 0x00
    #expect(throws: MembershipCodecError.self) { try MembershipMessage.decode(huge) }
    // Duplicate ids in a view.
    let twice = MembershipMessage.propose(MembershipView(epoch: 1, coordinator: 1, nodes: [nodeA, nodeA])).encode()
    #expect(throws: MembershipCodecError.self) { try MembershipMessage.decode(twice) }
}

@Test func quorumIsAMajorityOrExactlyHalfWithTheCoordinator() {
    let four = MembershipView(epoch: 1, coordinator: 1, nodes: (1...4).map {
        NodeInfo(id: $0, controlHost: "h", controlPort: 1, dataHost: "h", dataPort: 1, inRing: true)
    })
    #expect(MembershipRules.isQuorum([1, 2, 3], of: four))
    #expect(MembershipRules.isQuorum([1, 2], of: four))
    #expect(!MembershipRules.isQuorum([3, 4], of: four))
    #expect(!MembershipRules.isQuorum([2, 3], of: four))
    #expect(!MembershipRules.isQuorum([3, 4, 99], of: four), "non-members do not count")
    // Every pair of quorums of a view intersects (exhaustively for 1...6 nodes).
    for n in 1...6 {
        let v = MembershipView(epoch: 1, coordinator: 1, nodes: (1...UInt64(n)).map {
            NodeInfo(id: $0, controlHost: "h", controlPort: 1, dataHost: "h", dataPort: 1, inRing: true)
        })
        let subsets = (0..<(1 << n)).map { mask in Set((0..<n).filter { mask & (1 << $0) != 0 }.map { UInt64($0 + 1) }) }
        let quorums = subsets.filter { MembershipRules.isQuorum($0, of: v) }
        for q1 in quorums { for q2 in quorums { #expect(!q1.isDisjoint(with: q2)) } }
    }
}

/// Found by fuzzing: a view of epoch 2⁶⁴−1 decoded, was committed, and the next election's
/// `epoch + 1` trapped. Epochs above 2⁶² are garbage; a host with a control character too.
@Test func viewsWithAnEpochPast2To62OrHostsWithControlCharactersAreGarbage() throws {
    let node = NodeInfo(id: 1, controlHost: "127.0.0.1", controlPort: 1, dataHost: "127.0.0.1", dataPort: 2, inRing: true)
    for epoch: UInt64 in [UInt64.max, (1 << 62) + 1] {
        let far = MembershipMessage.commit(MembershipView(epoch: epoch, coordinator: 1, nodes: [node]), departed: []).encode()
        #expect(throws: MembershipCodecError.self) { try MembershipMessage.decode(far) }
    }
    let edge = MembershipMessage.commit(MembershipView(epoch: 1 << 62, coordinator: 1, nodes: [node]), departed: [])
    #expect(try MembershipMessage.decode(edge.encode()) == edge)
    var evil = node
    evil.controlHost = "host\n2026 critical: forged"
    let bad = MembershipMessage.propose(MembershipView(epoch: 3, coordinator: 1, nodes: [evil])).encode()
    #expect(throws: MembershipCodecError.self) { try MembershipMessage.decode(bad) }
}
