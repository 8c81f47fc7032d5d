import Checkpoints
import Configuration
import Coordination
import Foundation
import Logging
import Models
import Observe
import ParameterServer
import Pruning
import Tensors
import Transport
import Wire

/// The coordinator's shell: feeds the run state machine its events (requests, ticks, closed
/// connections, applied steps, written checkpoints), performs its directives (replies, folds,
/// steps, checkpoints, records) and owns the clock. The decisions are the machine's, the numbers
/// the parameter server's, the conversions Wire's.
actor CoordinatorShell {
    let config: RunConfiguration
    let configYAML: String
    let folder: RunFolder
    let logger: Logger
    let progress: @Sendable (ProgressEvent) -> Void
    var parts: CoordinatorParts
    var machine: RunStateMachine {
        get { parts.machine }
        _modify { yield &parts.machine }
    }
    var server: ParameterServer { parts.server }
    /// Opened by ``openRunFolder(now:)`` once the coordinator listens: a start that fails
    /// before then has changed nothing in the run folder.
    var recorder: RunRecorder!
    let runStart: RunStart
    /// What every welcome carries (the chunk stream's port is set once it listens).
    var run: RunDescription
    /// The gradient chunk size this run uses (``CoordinatorSettings/chunkValues(forValues:)``).
    nonisolated let chunkValues: Int
    let checkpoints: CheckpointStore
    private let writer: CheckpointWriter
    private let snapshots: SnapshotKeeper
    /// The sparsity the last support update set (nil: none seen yet in this process, after a resume).
    private var supportSparsity: Double?

    private var replies: [RequestID: CheckedContinuation<ReplyFrame, Never>] = [:]
    /// Open connections and when each was last heard from (silent ones are closed).
    private var connections: ConnectionWatch
    private var lastSilenceCheck = 0.0
    /// The machine's warnings, a repeated one counted rather than logged each time.
    private var warnings = RepeatedWarnings()
    private var nextRequest: RequestID = 1
    /// The parameter server's numbers of steps whose metrics line is not written yet.
    private var numbers: [Int: ParameterServer.StepNumbers] = [:]
    private var frames: (full: WeightsFrame?, delta: WeightsFrame?)
    var firstLoss: Double?
    var examplesProcessed = 0
    /// Requests that came on chunk streams (summary.json's `stream_chunks`).
    var streamChunks = 0
    /// Models written on chunk streams (summary.json's `stream_weights`).
    var streamWeights = 0
    var projectionSecondsTotal = 0.0
    private var outcome: RunSummary?
    /// What the HTTP endpoint shows (nil: `observe.http` is off). Fed the machine's directives
    /// and the step numbers; it decides nothing.
    let observer: RunObserver?
    /// Replies that carry a model: copied into messages a few at a time, each counted until its
    /// connection shows the weights arrived (issue 11's memory bound; see ``WeightsCopies``).
    nonisolated let weightsCopies: WeightsCopyGate
    /// The run's data order again, for the seconds of audio in each step (speech: record sizes
    /// are 2 bytes per 16 kHz sample plus a transcript of a few dozen bytes); only with an observer.
    private var audioOrder: DataOrder?
    private var finishedWaiters: [CheckedContinuation<RunSummary, Never>] = []

    nonisolated static func now() -> Double { Monotonic.now }

    /// Model-sized copies at once: with one worker a version's frame and one copy exist, with
    /// any number of workers the frame and two (the bound allows two models more than one
    /// worker's).
    static let weightsCopiesAtOnce = 2

    init(config: RunConfiguration, runID: String, token: [UInt8], folder: RunFolder, logger: Logger, start: RunStart,
         progress: @escaping @Sendable (ProgressEvent) -> Void) throws {
        let now = Self.now()
        self.config = config
        configYAML = config.yamlText()
        self.folder = folder
        self.logger = logger
        self.progress = progress
        let parts = try CoordinatorParts(config: config, runID: runID, token: token, folder: folder, logger: logger,
                                         start: start, now: now, clock: { Monotonic.now })
        self.parts = parts
        chunkValues = parts.machine.grid.chunkValues
        run = RunDescription(configYAML: configYAML, layout: parts.model.layout, chunkValues: chunkValues,
                             dataFingerprint: parts.model.dataFingerprint)
        let store = CheckpointStore(runDirectory: folder.url, keep: config.checkpoint.keep)
        checkpoints = store
        writer = CheckpointWriter(store: store)
        snapshots = SnapshotKeeper(schedule: config.pruning.schedule, pruning: config.pruning.method != .none, store: store, logger: logger)
        supportSparsity = parts.resumedFrom == nil ? 0 : nil
        runStart = start
        connections = ConnectionWatch(silentSeconds: config.security.silentConnectionSeconds)
        weightsCopies = WeightsCopyGate(capacity: Self.weightsCopiesAtOnce, holdSeconds: config.transport.requestTimeoutSeconds,
                                        clock: { Monotonic.now })
        observer = config.observe.http.isEmpty ? nil : RunObserver(RunObserver.Run(config, parts: parts), now: now)
        if observer != nil, let costs = parts.model.exampleCosts {
            audioOrder = DataOrder(seed: config.seed, examples: parts.model.trainingExamples, globalBatch: config.coordinator.globalBatch,
                                   microBatches: config.coordinator.microBatches, costs: costs,
                                   groupingWindow: config.coordinator.lengthGrouping)
        }
    }

    /// A resumed run already at its total finishes at once.
    func start() {
        if let signature = machine.computeSignature {
            logger.info("deterministic run: every worker must compute with \(signature)",
                        metadata: ["from": "\(machine.settings.computeSignatureOrigin)"])
        } else {
            logger.info("this coordinator computes with \(BLASRuntime.computeSignature) (workers may differ: deterministic is off)")
        }
        perform(machine.start(now: Self.now()))
    }

    // MARK: Events

    /// Answers one request, decoded (``RequestDecoding``) from `message` by the caller; a
    /// gradient chunk's values are folded from the received message. `read` is called once the
    /// machine has taken the request in (a chunk folded), before a held request waits for its
    /// reply: the message is no longer needed from then on.
    func answer(_ message: Message, decoded: DecodedRequest, peer: String, read: @Sendable () -> Void = {}) async
        -> (frame: ReplyFrame, request: RequestID?) {
        let answered = await answer(ReceivedRequest(pipe: message.pipe.rawValue, bytes: message.unsafeBytes, onStream: false), decoded: decoded, peer: peer,
                                    read: read)
        withExtendedLifetime(message) {}
        return answered
    }

    /// Answers a request that arrived as `request.bytes` (valid until this returns) on the
    /// connection `request.pipe`: from the REP socket, or a chunk stream's frame counted as its
    /// member's connection.
    func answer(_ request: ReceivedRequest, decoded: DecodedRequest, peer: String, read: @Sendable () -> Void = {}) async
        -> (frame: ReplyFrame, request: RequestID?) {
        let pipe = request.pipe
        let now = Self.now()
        if request.onStream { streamChunks += 1 }
        connections.heard(pipe, now: now)
        let id = nextRequest
        nextRequest += 1
        let frame: ReplyFrame = await withCheckedContinuation { continuation in
            defer { read() }
            do {
                let bytes = request.bytes
                var entropy = Data()
                switch decoded.inbound {
                case .hello, .proof: entropy = randomBytes(JoinHandshake.nonceBytes + JoinHandshake.sessionBytes)
                default: break
                }
                if let observer {
                    var worker: String?
                    switch decoded.inbound {
                    case .hello, .proof: break
                    default: worker = machine.membership.members[decoded.origin(pipe: pipe, peer: peer).session]?.name
                    }
                    var chunk = false
                    if case .chunk = decoded.inbound { chunk = true }
                    observer.request(id, worker: worker, chunk: chunk, bytes: bytes.count, now: now)
                }
                // Registered before the machine runs: a reply among its directives resumes it at
                // once; a held request is resumed by a later event.
                replies[id] = continuation
                let event = RunStateMachine.Event.request(id, decoded.inbound, decoded.origin(pipe: pipe, peer: peer), entropy: entropy, now: now)
                perform(machine.handle(event), chunk: decoded.values.map { UnsafeRawBufferPointer(rebasing: bytes[$0]) },
                        bf16: decoded.valuesBF16)
            }
        }
        return (frame, id)
    }

    /// A request that does not decode: refused, and the connection is still heard from.
    func refuseMalformed(_ message: Message, reason: String) -> ReplyFrame {
        connections.heard(message.pipe.rawValue, now: Self.now())
        return frame(.refusal(.malformed, reason))
    }

    /// The reply to `id` has left: it no longer counts against its member's requests in flight.
    func replySent(_ id: RequestID) { perform(machine.handle(.replySent(id, now: Self.now()))) }

    /// A refusal that never reached the machine (a message over the size limit).
    func refuse(_ code: RefusalCode, _ reason: String) -> ReplyFrame { frame(.refusal(code, reason)) }

    /// The clock's tick; returns the connections to close for silence (checked once a second).
    func tick() -> [UInt32] {
        let now = Self.now()
        perform(machine.handle(.tick(now: now)))
        for line in warnings.due(now: now) { log(line) }
        guard now - lastSilenceCheck >= 1 else { return [] }
        lastSilenceCheck = now
        let memberPipes = Set(machine.membership.members.values.map(\.pipe))
        return connections.silent(now: now, memberPipes: memberPipes)
    }

    func pipeOpened(_ pipe: UInt32) { connections.opened(pipe, now: Self.now()) }

    func pipeClosed(_ pipe: UInt32) {
        connections.closed(pipe)
        weightsCopies.closed(pipe: pipe)
        perform(machine.handle(.pipeClosed(pipe, now: Self.now())))
    }

    func stop(_ status: RunSummary.Status, message: String) {
        perform(machine.handle(.shutdown(RunStateMachine.Status(rawValue: status.rawValue) ?? .failed, message: message, now: Self.now())))
    }

    func waitUntilFinished() async -> RunSummary {
        if let outcome { return outcome }
        return await withCheckedContinuation { finishedWaiters.append($0) }
    }

    // MARK: Directives

    private func perform(_ directives: [RunStateMachine.Directive], chunk: UnsafeRawBufferPointer? = nil, bf16: Bool = false) {
        // Before performing: the machine is as the event left it (applying a step starts the next).
        observer?.observe(directives, machine: machine, now: Self.now())
        for directive in directives {
            switch directive {
            case let .reply(id, response):
                replies.removeValue(forKey: id)?.resume(returning: frame(response))
            case let .fold(_, offset, examples, microBatch, lossSum):
                guard let chunk, server.fold(chunk, at: offset, examples: examples, bf16: bf16) else {
                    logger.error("internal: a chunk accepted by the state machine does not fit at offset \(offset)")
                    continue
                }
                if let lossSum { server.addMicroBatch(microBatch, examples: examples, lossSum: lossSum) }
            case let .applyStep(step):
                applyStep(step)
            case let .writeCheckpoint(step, final):
                writeCheckpoint(step: step, final: final)
            case let .recordStep(record):
                let stepNumbers = numbers.removeValue(forKey: record.step)
                let line = recorder.recordStep(record, numbers: stepNumbers, now: Self.now())
                if let observer {
                    var observed = RunObserver.Step(line, sparsityOverall: stepNumbers?.sparsity.overall ?? 0)
                    if var order = audioOrder, let costs = parts.model.exampleCosts {
                        let examples = order.examplesByEpoch(forStep: record.step - 1).flatMap(\.examples)
                        observed.audioSeconds = Double(examples.reduce(0) { $0 + costs[$1] }) / 32_000
                        audioOrder = order
                    }
                    observer.recorded(observed)
                }
                progress(.step(line, total: config.steps))
            case let .memberJoined(member, peer):
                logger.info("worker joined", metadata: ["worker": "\(member.name)", "id": "\(member.id)", "peer": "\(peer)",
                                                        "session": "\(member.session)", "members": "\(machine.membership.count)"])
                progress(.membership(workers: machine.membership.count))
            case let .memberRemoved(member, reason, detail, reassigned):
                let level: Logger.Level = reason == .left || machine.isFinished ? .info : .warning
                logger.log(level: level, "worker removed: \(reason.rawValue)", metadata: [
                    "worker": "\(member.name)", "id": "\(member.id)", "detail": "\(detail)",
                    "reassigned_micro_batches": "\(reassigned.count)", "members": "\(machine.membership.count)"])
                progress(.membership(workers: machine.membership.count))
            case let .warn(message, peer):
                if let line = warnings.warn(message, peer: peer, now: Self.now()) { log(line) }
            case let .note(message):
                logger.info("\(message)")
            case let .startedTraining(step, workers):
                logger.info("starting: \(workers) worker(s) present", metadata: ["step": "\(step)"])
            case let .finish(status, message):
                conclude(RunSummary.Status(rawValue: status.rawValue) ?? .failed, message: message)
            }
        }
    }

    /// Replies are framed here: the weights a task names come from the frames of this version.
    private func log(_ line: RepeatedWarnings.Line) {
        let more = line.more > 0 ? " (\(line.more) more like this since the last such line)" : ""
        logger.warning("\(line.message)\(more)", metadata: line.peer.map { ["peer": "\($0)"] } ?? [:])
    }

    private func frame(_ response: Response) -> ReplyFrame {
        ReplyEncoding.frame(response, runID: machine.runID, step: machine.step, run: run) { attachment in
            switch attachment {
            case .none: return nil
            case .delta: return self.frames.delta
            case .full: return self.fullFrame()
            }
        }
    }

    private func fullFrame() -> WeightsFrame {
        if let full = frames.full, full.version == server.version { return full }
        let full = server.broadcast.withUnsafeBufferPointer { WeightsFrame(server.full, layout: server.layout, source: $0) }
        frames.full = full
        return full
    }

    private func applyStep(_ step: Int) {
        let started = Self.now()
        var failure: String?
        do {
            let n = try server.apply(step: step)
            numbers[step + 1] = n
            if firstLoss == nil { firstLoss = n.loss }
            parts.lastLoss = n.loss
            examplesProcessed += n.examples
            parts.examplesSeen += n.examples
            projectionSecondsTotal += n.projectionSeconds
            if let update = n.supportUpdate {
                supportSparsity = update.sparsity
                recorder.recordSupportUpdate(update, method: server.projection.name, seconds: n.projectionSeconds)
                observer?.supportUpdated(step: update.step + 1, layers: update.layers.map {
                    .init(name: $0.name, density: $0.density, overlapWithTopK: $0.overlapWithTopK, recoveryError: $0.recoveryError)
                })
            }
            // The weights of the next version, framed once for every reply that carries them.
            // A delta with no values-only tensor (a dense model, or every support changed) needs
            // nothing of the previous version: it is the whole model too, byte for byte, and
            // serves workers further behind without a second model-sized frame.
            let delta = server.delta.map { delta in
                server.broadcast.withUnsafeBufferPointer { WeightsFrame(delta, layout: server.layout, source: $0) }
            }
            frames = (server.delta?.isSelfContained == true ? delta : nil, delta)
            let recorded = parts.ledger.record(step: step + 1, parts: machine.examplesByEpoch(forStep: step))
            recorder.recordLedger(recorded.entries, completed: recorded.completedEpochs)
        } catch {
            failure = "step \(step + 1) not applied: \(error). The run folder's last checkpoint is intact: resume from it with a lower optimizer.learning_rate or a smaller optimizer.clip_norm, with --allow-changed-settings (both change the maths)"
        }
        let now = Self.now()
        perform(machine.handle(.stepApplied(.init(step: step, failure: failure, busySeconds: now - started), now: now)))
    }

    /// Snapshots the state after `step` steps and hands it to the writer thread: the step loop
    /// goes on while it is encoded and written.
    private func writeCheckpoint(step: Int, final: Bool) {
        let snapshotStart = Self.now()
        let state = TrainingState(step: step, broadcast: server.broadcast, weights: server.weights, optimizer: server.optimizer,
                                  projection: server.projection.checkpointState, ledger: parts.ledger,
                                  examplesSeen: parts.examplesSeen, lastLoss: parts.lastLoss ?? .nan)
        let context = TrainingState.Context(runID: machine.runID, configYAML: configYAML, fingerprint: parts.fingerprint,
                                            layout: server.layout, modelRecords: parts.model.checkpointRecords, config: config,
                                            projectionName: server.projection.name, examplesPerEpoch: parts.model.trainingExamples)
        var checkpoint = state.checkpoint(context)
        checkpoint.state.computeSignature = machine.computeSignature ?? ""
        let logger = self.logger
        let observer = self.observer
        let snapshotSeconds = String(format: "%.4f", Self.now() - snapshotStart)
        let snapshots = self.snapshots
        if snapshots.isSnapshot(step), let supportSparsity { snapshots.check(step: step, supportSparsity: supportSparsity) }
        // A pruning snapshot is never skipped for a newer checkpoint.
        writer.submit(checkpoint, final: final || snapshots.isSnapshot(step)) { report in
            switch report.outcome {
            case let .written(url):
                snapshots.written(step: report.step, at: url)
                observer?.checkpointWritten(seconds: report.seconds)
                logger.debug("checkpoint written", metadata: ["step": "\(report.step)", "path": "\(url.path)", "bytes": "\(report.bytes)",
                                                              "snapshot_seconds": "\(snapshotSeconds)", "final": "\(final)",
                                                              "write_seconds": "\(String(format: "%.3f", report.seconds))"])
                Task { await self.checkpointReport(.checkpointWritten(step: report.step, now: Self.now())) }
            case let .superseded(newer):
                logger.debug("checkpoint of step \(report.step) skipped: superseded by step \(newer) before it was written")
            case let .failed(failure):
                snapshots.failed(step: report.step, cause: failure.cause)
                Task { await self.checkpointReport(.checkpointFailed(step: report.step, message: failure.cause, now: Self.now())) }
            }
        }
    }

    private func checkpointReport(_ event: RunStateMachine.Event) { perform(machine.handle(event)) }

    private func conclude(_ status: RunSummary.Status, message: String?) {
        var status = status, message = message
        // Records a full disk held back: written now, or the run did not save all it did.
        if let unsaved = recorder.flushAll() {
            logger.error("\(unsaved)")
            if status == .completed { status = .failed }
            message = message.map { $0 + "; " + unsaved } ?? unsaved
        }
        if !snapshots.problems.isEmpty {
            let unsaved = snapshots.problems.joined(separator: "; ")
            if status == .completed { status = .failed }
            message = message.map { $0 + "; " + unsaved } ?? unsaved
        }
        var summary = makeSummary(status: status, message: message)
        if !recorder.writeSummary(summary), summary.status == .completed {
            summary.status = .failed
            summary.message = "summary.json could not be written (see the log)"
        }
        outcome = summary
        var metadata: Logger.Metadata = ["steps": "\(machine.step)", "final_loss": "\(parts.lastLoss ?? .nan)"]
        // metrics.jsonl's names: valid_seen is spoken by training voices (recipe 2), the others
        // by what the corpus holds out.
        if let w = summary.validWer { metadata["valid_wer"] = "\(w)" }
        if let w = summary.validWerChannel { metadata["valid_wer_channel"] = "\(w)" }
        if let w = summary.validWerSeen { metadata["valid_wer_seen"] = "\(w)" }
        logger.info("run \(status.rawValue)", metadata: metadata)
        for waiter in finishedWaiters { waiter.resume(returning: summary) }
        finishedWaiters = []
    }

    /// Every checkpoint handed to the writer is on disk (or failed).
    func flushCheckpoints() async { await writer.flush() }
}
