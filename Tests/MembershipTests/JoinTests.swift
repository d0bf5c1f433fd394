import Collectives
import Transport
import Testing

@Test func bootstrapAndTwoJoinersAreAdmittedAtUpdateTopologyWithEqualViews() async throws {
    let founder = makeNode(0)
    let a = makeNode(1)
    let b = makeNode(2)
    let nodes = [founder, a, b]
    try await cleanUp({ await shutdownAll(nodes) }) {
        let port = try await founder.start(dataPort: 41000, seed: nil)
        #expect(founder.status.role == .coordinator)
        #expect(founder.status.epoch == 1)
        _ = try await a.start(dataPort: 41001, seed: ("127.0.0.1", port))
        _ = try await b.start(dataPort: 41002, seed: ("127.0.0.1", port))
        // Registered but not admitted: the view is unchanged until the update point.
        try await waitUntil(15, "both joiners queued", watching: [founder]) { founder.status.pendingJoiners == 2 }
        #expect(founder.status.epoch == 1)
        #expect(a.status.role == .joining)

        let rings = try await updateAll(nodes)
        #expect(rings[0] == rings[1] && rings[1] == rings[2])
        #expect(rings[0].epoch == 2)
        #expect(rings[0].members.map(\.id) == [founder.localId, a.localId, b.localId])
        #expect(rings[0].members.map(\.port) == [41000, 41001, 41002])
        let views = nodes.map { $0.view }
        #expect(views[0] == views[1] && views[1] == views[2])
        #expect(views[0]?.coordinator == founder.localId)
        #expect(a.status.role == .member && b.status.role == .member)
        #expect(founder.status.joins == 2)
        #expect(founder.status.pendingJoiners == 0)

        // With nobody waiting to join, the update point is a barrier that keeps the epoch.
        let again = try await updateAll(nodes)
        #expect(again[0] == rings[0] && again[2] == rings[0])
    }
}

@Test func aJoinerThroughANonCoordinatorSeedIsRedirected() async throws {
    let (nodes, ports) = try await makeCluster(2)
    let late = makeNode(7)
    try await cleanUp({ await shutdownAll(nodes + [late]) }) {
        // Seed: the non-coordinator member.
        _ = try await late.start(dataPort: 41007, seed: ("127.0.0.1", ports[1]))
        try await waitUntil(15, "joiner queued at the coordinator", watching: nodes) { nodes[0].status.pendingJoiners == 1 }
        let rings = try await updateAll(nodes + [late])
        #expect(rings.allSatisfy { $0 == rings[0] })
        #expect(rings[0].members.map(\.id) == nodes.map(\.localId) + [late.localId])
        #expect(late.view?.coordinator == nodes[0].localId)
    }
}

@Test func aCoordinateOnlyNodeCoordinatesWithoutARingPosition() async throws {
    let coordinator = makeNode(0)
    let a = makeNode(1)
    let b = makeNode(2)
    try await cleanUp({ await shutdownAll([coordinator, a, b]) }) {
        let port = try await coordinator.start(dataPort: 0, seed: nil, coordinatorOnly: true)
        #expect(coordinator.status.role == .coordinator)
        // An empty ring has nobody to wait for: the first joiner is admitted at once.
        _ = try await a.start(dataPort: 41101, seed: ("127.0.0.1", port))
        let first = try await updateAll([a])
        #expect(first[0].members.map(\.id) == [a.localId])
        // The next joiner waits for the ring's update point; the coordinator never calls it.
        _ = try await b.start(dataPort: 41102, seed: ("127.0.0.1", port))
        try await waitUntil(15, "second joiner queued", watching: [coordinator]) { coordinator.status.pendingJoiners == 1 }
        let rings = try await updateAll([a, b])
        #expect(rings[0] == rings[1])
        #expect(rings[0].members.map(\.id) == [a.localId, b.localId])
        #expect(rings[0].members.map(\.port) == [41101, 41102])
        #expect(a.view?.ids == [coordinator.localId, a.localId, b.localId])
        #expect(a.view?.coordinator == coordinator.localId)
    }
}

@Test func aNodeWithTheWrongKeyIsRefused() async throws {
    let founder = makeNode(0)
    try await cleanUp({ await founder.shutdown() }) {
        let port = try await founder.start(dataPort: 41200, seed: nil)
        let stranger = MembershipNode(localId: 0xBAD, key: try ClusterKeyForTests.other(), options: fastOptions, logger: testLogger())
        // A failed start() shuts the node down itself.
        await #expect(throws: MembershipError.self) {
            _ = try await within(60, "refused join") { try await stranger.start(dataPort: 41201, seed: ("127.0.0.1", port)) }
        }
        #expect(founder.status.pendingJoiners == 0)
    }
}
