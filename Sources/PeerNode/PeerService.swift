import Collectives
import DiLoCo
import Foundation
import Logging
import Models
import ServiceLifecycle
import Transport

/// One training member of the cluster as a lifecycle service: started (listening, joined or
/// founded) before the service group runs, so that the `ready` line reports real ports and a bad
/// setting fails before anything else starts.
///
/// Graceful shutdown (SIGTERM, Ctrl-C) lets the current outer step finish, writes the checkpoint
/// and leaves the cluster, so the others see a leave, not a death. If the step outlives the grace
/// period the group cancels this service: the node leaves at once, which aborts the step on every
/// member (they retry without it), and the last checkpoint written stays on disk as it is.
final class PeerService: Service, @unchecked Sendable {
    let settings: RunSettings
    let logger: Logger
    let id: UInt64
    let node: MembershipNode
    let communicator: Communicator
    let state: SharedState
    let server: StateServer
    let trainer: DiLoCoTrainer
    let controlPort: Int
    let dataPort: Int
    let recorder: StatusRecorder
    /// nil with `--no-status`.
    let statusServer: StatusServer?

    private let lock = NSLock()
    private var stopRequested = false
    private var failure: (any Error)?
    /// The grace period ran out and the step in flight was aborted: the optimizer may be half way
    /// through a round, so the checkpoint of the last finished step is kept as it is.
    private var abortedStep = false

    var failed: Bool { lock.withLock { failure != nil } }
    private var stopping: Bool { lock.withLock { stopRequested } }

    private init(settings: RunSettings, logger: Logger, id: UInt64, node: MembershipNode, communicator: Communicator,
                 state: SharedState, server: StateServer, trainer: DiLoCoTrainer, controlPort: Int, dataPort: Int,
                 recorder: StatusRecorder, statusServer: StatusServer?) {
        self.settings = settings
        self.logger = logger
        self.id = id
        self.node = node
        self.communicator = communicator
        self.state = state
        self.server = server
        self.trainer = trainer
        self.controlPort = controlPort
        self.dataPort = dataPort
        self.recorder = recorder
        self.statusServer = statusServer
    }

    /// Loads the key, the data and the checkpoint, binds both ports, founds or joins the cluster,
    /// and prints the `ready` line.
    static func start(settings: RunSettings) async throws -> PeerService {
        let key = try settings.clusterKey()
        let control = settings.listen
        let dataAddress = settings.dataListen
        let id = key.newNodeId()
        var logger = Logger(label: "peernode")
        logger[metadataKey: "node.id"] = "\(hex(id))"

        let kind = settings.model
        let task: TrainingTask
        do {
            task = try TrainingTask.make(TaskSpec(model: kind, dataset: settings.data, dataDirectory: settings.dataDir,
                                                  shard: Shard(index: settings.shardIndex, count: settings.shardCount),
                                                  seed: settings.seedValue,
                                                  dataFormat: settings.dataFormat))
        } catch {
            throw RunError("cannot load the training data: \(error)")
        }
        let node = MembershipNode(localId: id, key: key, options: settings.membershipOptions, logger: logger)
        let communicator = Communicator(localId: id, key: key, options: settings.communicatorOptions, logger: logger)
        if let initFrom = settings.initFrom {
            do {
                try ModelWeights.load(initFrom, into: task.parameters)
            } catch {
                throw RunError("cannot start from the weights: \(error)")
            }
        }
        let state = try DiLoCoTrainer.sharedState(for: task)
        if let checkpoint = settings.checkpoint, FileManager.default.fileExists(atPath: checkpoint) {
            // Resume: load into a scratch state first, so that a bad file changes nothing.
            let loaded = try DiLoCoTrainer.sharedState(for: task)
            do {
                let local = try Checkpoint.readAnyVersion(checkpoint, into: loaded)
                // The local blob is this peer's AdamW state (empty in checkpoints of older versions).
                if !local.isEmpty { try task.optimizer.restoreState(local) }
            } catch {
                throw RunError("cannot resume: \(error)")
            }
            try state.copy(from: loaded)
            logger.info("resumed from checkpoint", metadata: ["path": "\(checkpoint)", "revision": "\(state.revision)",
                                                             "digest": "\(state.digest().short)",
                                                             "optimizer.step": "\(task.optimizer.step)"])
        }
        let server = StateServer(state: state, logger: logger)
        let session = MembershipSession(node: node, communicator: communicator, server: server,
                                        downloader: StateDownloader(localId: id, key: key, logger: logger), logger: logger)
        var options = DiLoCoOptions()
        options.innerSteps = settings.innerSteps
        options.quantization = settings.quant.quantization
        options.mode = settings.mode
        options.outerLearningRate = Float(settings.outerLr)
        options.outerMomentum = Float(settings.outerMomentum)
        let trainer = try DiLoCoTrainer(task: task, state: state, session: session, options: options, logger: logger)

        // The status port first: a port that is taken must fail before this node joined anyone.
        let recorder = StatusRecorder(identity: .init(nodeId: id, model: kind.rawValue, dataset: task.spec.dataset, tls: "\(key.security)"),
                                      membership: { node.status },
                                      traffic: { (communicator.traffic.bytesSent, communicator.traffic.bytesReceived) })
        var statusServer: StatusServer?
        do {
            if settings.status {
                statusServer = try await StatusServer.start(recorder: recorder, host: settings.statusBind, port: settings.statusPort,
                                                            logger: logger)
            }
        } catch {
            throw RunError("cannot start the status port on \(settings.statusBind):\(settings.statusPort): \(error)")
        }
        let dataPort: Int
        let controlPort: Int
        do {
            dataPort = try await communicator.listen(host: dataAddress.host, port: dataAddress.port)
            controlPort = try await node.start(controlHost: control.host, controlPort: control.port,
                                               advertiseHost: settings.advertise,
                                               dataHost: settings.announced(settings.dataListen), dataPort: dataPort,
                                               seeds: settings.seedAddresses,
                                               settings: settings.clusterFingerprint(parameters: task.parameters.count))
        } catch {
            await node.shutdown()
            await communicator.shutdown()
            await statusServer?.shutdown()
            if let error = error as? MembershipError, error.code == .joinTimedOut { throw JoinTimedOut(reason: "\(error)") }
            throw RunError("cannot start: \(error)")
        }
        print("ready id=\(hex(id)) revision=\(state.revision) control_port=\(controlPort) data_port=\(dataPort) parameters=\(task.parameters.count) "
              + "optimizer_step=\(task.optimizer.step) status_port=\(statusServer.map { "\($0.port)" } ?? "off") kernels=\(Kernels.instructionSet.rawValue) "
              + "tls=\(key.security)")
        fflush(nil)
        return PeerService(settings: settings, logger: logger, id: id, node: node, communicator: communicator, state: state,
                           server: server, trainer: trainer, controlPort: controlPort, dataPort: dataPort,
                           recorder: recorder, statusServer: statusServer)
    }

    func run() async throws {
        let node = self.node
        let communicator = self.communicator
        // The status port follows the node's membership events for as long as the service runs.
        let events = node.events()
        let recorder = self.recorder
        let following = Task { await recorder.follow(events) }
        // The links this member probes for the ring plan (docs/membership.md, "Ring order").
        let prober = settings.ringOrder == .measured
            ? LinkProber(node: node, communicator: communicator, refresh: .milliseconds(Int64(settings.probeIntervalS * 1000)), logger: logger)
            : nil
        let probing = prober.map { prober in Task { await prober.run() } }
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await train()
            } onGracefulShutdown: { [self] in
                logger.info("shutdown requested: finishing the current step, then leaving")
                lock.withLock { stopRequested = true }
            }
        } onCancel: {
            // The grace period is over: leaving aborts the step in flight everywhere; stopping the
            // communicator ends any wait for a ring (the trainer does not retry once cancelled).
            communicator.abortRing(reason: "this peer is shutting down")
            Task {
                await node.leave()
                await communicator.shutdown()
            }
        }
        await close()
        following.cancel()
        probing?.cancel()
        await following.value
        await probing?.value
    }

    private func train() async {
        var failure: (any Error)?
        // Update points until enough peers joined (each admits whoever registered meanwhile); the
        // last one is the first step's update point.
        var updated: Int?
        do {
            var peers = 0
            while true {
                do {
                    peers = try await trainer.session.updateTopology()
                } catch where Self.isTransient(error) && !Task.isCancelled && !stopping {
                    // A ring that could not form (a neighbour unreachable for the formation
                    // timeout, say its data port busy) is no reason to exit: the next update
                    // point forms it again, as in the training loop below.
                    logger.warning("could not form the ring yet; trying again at the next update point: \(error)")
                    try await Task.sleep(for: .milliseconds(500))
                    continue
                }
                if stopping || Task.isCancelled || peers >= settings.minPeers { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            updated = peers
        } catch {
            failure = error
        }
        let outerSteps = UInt64(settings.outerSteps)
        var setbacks = 0
        while failure == nil, !stopping, !Task.isCancelled, outerSteps == 0 || trainer.revision < outerSteps {
            if setbacks > 0 {
                // After a step that gave up: a short, growing pause, so that a cluster in turmoil
                // is not hammered, then the next step starts at the update point like any other.
                try? await Task.sleep(for: .milliseconds(min(100 << min(setbacks, 5), 3000)))
            }
            do {
                let before = trainer.revision
                // The update point passed while waiting for peers belongs to the first step only,
                // also when that step fails.
                let passed = updated
                updated = nil
                let report = try await trainer.outerStep(topologyUpdated: passed)
                // (Async mode, after a recovery that left nobody holding a pseudo-gradient: the
                // step applied no outer update; the trainer logged it. Nothing new to report.)
                if report.revision == before { continue }
                let metrics = trainer.evaluate()
                if let checkpoint = settings.checkpoint, report.revision % UInt64(settings.checkpointEvery) == 0 {
                    writeCheckpoint(checkpoint)
                }
                recorder.recordOuterStep(report, evaluation: metrics)
                printOuterLine(report, metrics)
                setbacks = 0
            } catch where Self.isTransient(error) && !Task.isCancelled && !stopping {
                // A process that can retry does not exit: the cluster changed under this step
                // more often than the trainer retries, or a state download failed. The next
                // step starts over at the update point.
                setbacks += 1
                logger.warning("outer step abandoned; starting the next one: \(error)", metadata: ["revision": "\(trainer.revision)"])
            } catch {
                failure = error
            }
        }
        if Task.isCancelled, failure != nil {
            // Aborted by our own cancellation, not a cluster failure.
            logger.warning("the step in flight was aborted: the shutdown grace period (\(settings.shutdownGraceS) s) ran out")
            failure = nil
            lock.withLock { abortedStep = true }
        }
        lock.withLock { self.failure = failure }
    }

    /// Failures the next outer step can get past: the ring or the membership changed, a ring
    /// timed out, a download found no good donor. Anything else (a wrong key, settings that do
    /// not match the cluster's, a stopped node) ends the process with one line.
    static func isTransient(_ error: any Error) -> Bool {
        switch error {
        case let error as CollectiveError: DiLoCoTrainer.isRetryable(error)
        case is StateTransferError: true
        default: false
        }
    }

    /// After the loop: checkpoint and leave (or, after a failure, stop without a goodbye).
    private func close() async {
        if let failure = lock.withLock({ failure }) {
            logger.error("stopping: \(failure)")
            recorder.markStopping("\(failure)")
            await node.shutdown()
            await communicator.shutdown()
            await statusServer?.shutdown()
            return
        }
        if let checkpoint = settings.checkpoint, !lock.withLock({ abortedStep }) { writeCheckpoint(checkpoint) }
        logger.info("leaving the cluster")
        recorder.markStopping("leaving the cluster")
        await node.leave()
        await communicator.shutdown()
        await statusServer?.shutdown()
    }

    private func writeCheckpoint(_ path: String) {
        do {
            // Between steps: the optimizer is idle, so its state is consistent with θ's revision.
            let local = trainer.task.optimizer.encodedState()
            try server.lock.withLock { try Checkpoint.write(state, local: local, to: path) }
        } catch {
            // A full disk loses nothing: the previous checkpoint stays; training goes on.
            logger.error("checkpoint not written: \(error)")
        }
    }

    private func printOuterLine(_ report: OuterStepReport, _ metrics: Metrics) {
        let status = node.status
        let metric = metrics.name.replacingOccurrences(of: " ", with: "_")
        print("outer revision=\(report.revision) loss=\(report.meanInnerLoss) metric=\(metric) \(metric)=\(metrics.value) "
              + "digest=\(report.digest) peers=\(report.peers) epoch=\(status.view?.epoch ?? 0) line=\(hex(trainer.state.lineage.line)) role=\(status.role) "
              + "retries=\(report.retries) bytes_sent=\(communicator.traffic.bytesSent) bytes_received=\(communicator.traffic.bytesReceived) "
              + "inner_s=\(report.innerSeconds) comm_s=\(report.communicationSeconds) "
              + "joins=\(status.joins) leaves=\(status.leaves) deaths=\(status.deaths) aborts=\(status.aborts)")
        fflush(nil)
    }
}
