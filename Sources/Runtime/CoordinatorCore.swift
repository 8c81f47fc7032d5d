import Checkpoints
import Configuration
import Coordination
import Foundation
import Logging
import Models
import Pruning
import Tasks
import Tensors
import Training
import Wire

/// The coordinator's state and its reactions to requests, serialized by an actor.
///
/// The decisions live in the pure state machines (Membership, JoinHandshake, StepRound,
/// DataOrder); this actor applies them to the numeric state (weights, accumulator, optimizer,
/// projection) and to files (metrics, checkpoints). It never touches a socket.
actor CoordinatorCore {
    let config: RunConfiguration
    let configYAML: String
    let runID: String
    let folder: RunFolder
    let logger: Logger
    let model: any TrainableModel
    let layout: ParameterLayout
    /// Computed once: workers compare it with their own in the welcome.
    let dataFingerprint: String
    let progress: @Sendable (ProgressEvent) -> Void

    private var handshake: JoinHandshake
    private var membership = Membership()
    private var workerNames: Set<String> = []
    private var order: DataOrder
    private var grid: ChunkGrid
    private var round: StepRound

    /// Dense master weights (the optimizer's copy).
    private var weights: [Float]
    /// What workers compute with: the projection of `weights`.
    private var broadcast: [Float]
    /// The current weights (version `round.weightsVersion`) for any receiver; built when first
    /// asked for, since in steady state every worker holds the previous version and gets
    /// `deltaMessage` instead.
    private var fullMessage: Csptrain_V1_Weights?
    /// The current weights for receivers at the previous version: tensors whose support did not
    /// change go as values only.
    private var deltaMessage: Csptrain_V1_Weights?
    /// The weights of the current version, as broadcast.
    private var sentBroadcast: [Float]
    private var optimizer: Optimizer
    private var projection: any ProjectionStep
    private var accumulator: GradientAccumulator
    private let checkpoints: CheckpointStore
    private let writer: CheckpointWriter
    /// The settings that change the maths; checkpoints carry them and a resume compares them.
    let fingerprint: MathsFingerprint
    private var ledger: RunLedger
    private let ledgerFiles: LedgerFiles
    private var examplesSeen = 0
    /// The last step a checkpoint was submitted for (the resume point's step after a resume).
    private var lastSubmittedStep = -1
    /// Deterministic runs: the compute signature all workers share (set by the first to join, or
    /// by the checkpoint resumed from).
    private var computeSignature: String?
    /// Set when the run is ending: the final checkpoint is being written; nothing changes any more.
    private var ending = false
    private let metrics: MetricsWriter
    private lazy var pruningLog = MetricsWriter(url: folder.pruningFile, truncate: false)
    private var projectionSecondsTotal = 0.0

    private(set) var step: Int
    let startStep: Int
    private var stepStarted = Monotonic.now
    private let runStarted = Monotonic.now
    private var examplesProcessed = 0
    private var firstLoss: Double?
    private var lastLoss: Double?
    private var staleChunks = 0
    private var duplicateChunks = 0
    private var reassignedMicroBatches = 0
    private var started = false
    /// The checkpoint the run resumed from, for the summary.
    let resumedFrom: String?

    private struct Waiter {
        let session: SessionID
        let haveVersion: UInt64
        let holdUntil: Double
        let continuation: CheckedContinuation<Reply, Never>
    }
    private var waiters: [Waiter] = []

    /// The evaluation in progress (training pauses while it runs), the metrics line of the step
    /// it follows, and whether the run ends when it is done.
    private var evalRound: EvalRound?
    private var evalCounts: [String: EvaluationCounts] = [:]
    private var pendingMetrics: StepMetrics?
    private var checkpointAfterEvaluation = false
    private var finishAfterEval = false
    private var lastValidation: [String: EvaluationCounts] = [:]

    /// Set when the run ends; later requests get Finished.
    private(set) var outcome: RunSummary?
    private var finishedContinuations: [CheckedContinuation<RunSummary, Never>] = []
    /// Sessions that have been told the run is over.
    private var toldFinished: Set<SessionID> = []

    /// `start`: from step 0, or from a checkpoint whose maths settings must agree with
    /// `config`'s (unless the user allowed them to change).
    init(config: RunConfiguration, runID: String, token: [UInt8], folder: RunFolder, logger: Logger,
         start: RunStart = .fresh, progress: @escaping @Sendable (ProgressEvent) -> Void) throws {
        var resume: Checkpoint?
        var allowChangedSettings = false
        var resumePath: String?
        if case let .resume(checkpoint, url, allow) = start {
            resume = checkpoint
            allowChangedSettings = allow
            resumePath = url.path
        }
        resumedFrom = resumePath
        self.config = config
        configYAML = config.yamlText()
        self.runID = runID
        self.folder = folder
        self.logger = logger
        self.progress = progress
        handshake = JoinHandshake(token: token, runID: runID)
        model = try ModelFactory.make(model: config.model, data: config.data, augmentation: config.augmentation, seed: config.seed)
        layout = model.layout
        dataFingerprint = model.dataFingerprint
        order = DataOrder(seed: config.seed, examples: model.trainingExamples,
                          globalBatch: config.coordinator.globalBatch, microBatches: config.coordinator.microBatches,
                          costs: model.exampleCosts, groupingWindow: config.coordinator.lengthGrouping)
        grid = ChunkGrid(tensors: layout.tensors.map { ($0.offset, $0.count) }, chunkValues: config.coordinator.chunkValues)
        // A resumed run takes its weights from the checkpoint (init_from may not even exist here).
        let initial = resume == nil ? try Self.initialWeights(config: config, model: model) : []
        // Pruning starts after the first update (the schedule's start step); step 0 is dense.
        var firstBroadcast = initial
        if config.coordinator.broadcastValues == .f16 { firstBroadcast.withUnsafeMutableBufferPointer { FloatEncoding.roundToHalf($0) } }
        do { projection = try config.pruning.makeProjection(layout: model.layout, seed: config.seed) } catch {
            throw RunFolderError("\(error)")
        }
        fingerprint = MathsFingerprint(config: config, dataFingerprint: model.trainingDataFingerprint)
        accumulator = GradientAccumulator(parameterCount: layout.totalCount, mode: config.deterministic ? .fixedPoint : .float)
        let store = CheckpointStore(runDirectory: folder.url, keep: config.checkpoint.keep)
        checkpoints = store
        writer = CheckpointWriter(store: store)
        ledgerFiles = LedgerFiles(folder: folder.ledgerFolder)
        var state = TrainingState(step: 0, broadcast: firstBroadcast, weights: initial,
                                  optimizer: Optimizer(settings: config.optimizer, parameterCount: layout.totalCount),
                                  projection: ProjectionState(), ledger: RunLedger(examplesPerEpoch: model.trainingExamples),
                                  examplesSeen: 0, lastLoss: .nan)
        if let resume {
            let source = resumePath ?? "the checkpoint"
            guard resume.formatVersion >= 2 else {
                throw RunFolderError("\(source) is in checkpoint format version \(resume.formatVersion), written before csptrain kept what an exact resume needs (optimizer counter, pruning state, ledger); start a new run from its weights with --set init_from=\(source) instead")
            }
            let saved = MathsFingerprint(text: resume.mathsSettings)
            let differences = fingerprint.differences(from: saved)
            if !differences.isEmpty {
                let list = differences.map { "  " + $0 }.joined(separator: "\n")
                guard allowChangedSettings else {
                    throw RunFolderError("cannot resume from step \(resume.step): these settings change the maths and differ from the checkpoint's:\n\(list)\nResume with the checkpoint's settings (drop --config/--set for them), or pass --allow-changed-settings to continue with the new ones anyway (the run is then no longer the one that was interrupted).")
                }
                logger.warning("resuming with settings that change the maths (--allow-changed-settings):\n\(list)")
            }
            do {
                state = try TrainingState.restore(from: resume, layout: layout, optimizer: config.optimizer,
                                                  examplesPerEpoch: model.trainingExamples)
            } catch {
                throw RunFolderError("cannot resume from \(source): \(error)")
            }
            do { try projection.restore(state.projection) } catch {
                throw RunFolderError("cannot resume from \(source): its pruning state does not fit pruning.method \(config.pruning.method.rawValue): \(error)")
            }
            // Checkpoints past the resume point belong to a history this run abandons (a resume
            // from an older file, or a kill between writing a file and moving `latest`): they
            // must not be picked by a later fallback or outlive this run's own.
            let abandoned = store.setAsideSteps(after: resume.step)
            if let from = resumePath, URL(fileURLWithPath: from).standardizedFileURL == store.path(forStep: resume.step).standardizedFileURL {
                try? store.pointLatest(toStep: resume.step)
            }
            if !abandoned.isEmpty {
                logger.notice("moved checkpoints past step \(resume.step) aside: this run continues from step \(resume.step)",
                              metadata: ["files": "\(abandoned.joined(separator: ", "))", "to": "\(store.directory.path)/abandoned"])
            }
            if config.optimizer.schedule.decay == .cosine,
               let before = try? RunConfiguration.parse(yaml: resume.configYAML, source: "the checkpoint"), before.steps != config.steps {
                logger.warning("steps changed from \(before.steps) to \(config.steps): the cosine learning-rate schedule now decays over \(config.steps) steps, so the rates from step \(resume.step + 1) on differ from the original run's")
            }
        }
        weights = state.weights
        broadcast = state.broadcast
        optimizer = state.optimizer
        ledger = state.ledger
        examplesSeen = state.examplesSeen
        if resume != nil { lastLoss = state.lastLoss.isFinite ? state.lastLoss : nil }
        if let signature = resume?.state.computeSignature, !signature.isEmpty, config.deterministic { computeSignature = signature }
        // The run folder's files start where the state does: the ledger as the checkpoint has it,
        // metrics and pruning logs without the steps lost after it (a fresh run: empty).
        for problem in try ledgerFiles.restore(state.ledger) { logger.warning("ledger: \(problem)") }
        if resume != nil {
            try truncateJSONLines(folder.metricsFile, afterStep: state.step)
            try truncateJSONLines(folder.pruningFile, afterStep: state.step)
        } else {
            try? FileManager.default.removeItem(at: folder.pruningFile)
        }
        let leftovers = store.removeUnfinishedWrites()
        if !leftovers.isEmpty {
            logger.info("removed checkpoint files a crash left half-written", metadata: ["files": "\(leftovers.joined(separator: ", "))"])
        }
        metrics = MetricsWriter(url: folder.metricsFile, truncate: resume == nil)
        try folder.write(configYAML, to: folder.configFile)
        step = state.step
        startStep = state.step
        lastSubmittedStep = resume == nil ? -1 : state.step
        sentBroadcast = broadcast
        round = StepRound(step: step, weightsVersion: UInt64(step + 1), microBatches: order.microBatches(forStep: step), grid: grid)
    }

    var memberCount: Int { membership.count }

    /// A resumed run whose checkpoint is already at the run's total of steps has nothing to do.
    func finishIfAlreadyComplete() {
        guard step >= config.steps, outcome == nil else { return }
        logger.notice("the checkpoint is at step \(step), the run's total: nothing left to do")
        finish(.completed, message: "already complete at step \(step)")
    }

    /// The weights of version `current` for a worker holding `have`: values only where the
    /// support did not change when it holds the previous version, everything otherwise.
    private func weightsMessage(for have: UInt64, current: UInt64) -> Csptrain_V1_Weights {
        if let deltaMessage, deltaMessage.version == current, have == current &- 1 { return deltaMessage }
        if let fullMessage, fullMessage.version == current { return fullMessage }
        let message = WireCodec.weights(sentBroadcast, layout: layout, version: current, half: config.coordinator.broadcastValues == .f16)
        fullMessage = message
        return message
    }

    // MARK: Requests

    /// Answers one request. `pipe` is the connection it came on; `peer` its address, for logs.
    func handle(_ request: Request, pipe: UInt32, peer: String) async -> Reply {
        let h = request.header
        guard h.protocolVersion == protocolVersion else {
            logger.warning("refused a request: protocol version \(h.protocolVersion), this coordinator speaks \(protocolVersion)", metadata: ["peer": "\(peer)"])
            return refusal(.versionMismatch, "this coordinator speaks protocol version \(protocolVersion); the request has version \(h.protocolVersion)")
        }
        switch request.body {
        case let .hello(hello)?:
            return challenge(hello)
        case let .proof(proof)? where h.runID == runID:
            return join(proof, pipe: pipe, peer: peer)
        default:
            break
        }
        guard h.runID == runID else {
            logger.warning("refused a request for another run", metadata: ["peer": "\(peer)", "their_run": "\(h.runID)"])
            return refusal(.wrongRun, "this coordinator runs '\(runID)', the request is for run '\(h.runID)'")
        }
        let session = SessionID(h.session)
        guard membership.touch(session, pipe: pipe, now: Monotonic.now) != nil else {
            return refusal(.unknownSession, "session \(session) is not a member (the coordinator restarted or dropped it): join again")
        }
        switch request.body {
        case let .work(work)?:
            return await workRequest(session: session, haveVersion: work.weightsVersion)
        case let .chunk(chunk)?:
            guard let chunkStep = Int(exactly: h.step) else {
                return refusal(.malformed, "step \(h.step) is out of range")
            }
            return receive(chunk, step: chunkStep, session: session, peer: peer)
        case let .evalResult(result)?:
            return receive(result, session: session, peer: peer)
        case let .leave(leave)?:
            drop(session, reason: .left, detail: leave.reason)
            var reply = Reply()
            reply.header = header()
            reply.finished = Csptrain_V1_Finished.with { $0.reason = "goodbye" }
            return reply
        default:
            logger.warning("refused a request with no body", metadata: ["peer": "\(peer)"])
            return refusal(.malformed, "the request has no body (expected hello, proof, work, chunk or leave)")
        }
    }

    private func header(session: Data = Data()) -> Csptrain_V1_Header {
        WireCodec.header(runID: runID, step: step, session: session)
    }

    private func refusal(_ code: Csptrain_V1_Refusal.Code, _ reason: String) -> Reply {
        WireCodec.refusal(code, reason, runID: runID, step: step)
    }

    private func challenge(_ hello: Csptrain_V1_Hello) -> Reply {
        let nonce = randomBytes(JoinHandshake.nonceBytes)
        handshake.issue(serverNonce: nonce, now: Monotonic.now)
        var reply = Reply()
        reply.header = header()
        reply.challenge = Csptrain_V1_Challenge.with { $0.serverNonce = nonce }
        return reply
    }

    private func join(_ proof: Csptrain_V1_Proof, pipe: UInt32, peer: String) -> Reply {
        let verdict = handshake.verify(workerName: proof.workerName, clientNonce: proof.clientNonce,
                                       serverNonce: proof.serverNonce, mac: proof.mac, now: Monotonic.now)
        switch verdict {
        case .unknownChallenge:
            logger.warning("refused a join: unknown or expired challenge", metadata: ["peer": "\(peer)", "worker": "\(proof.workerName)"])
            return refusal(.challengeExpired, "the challenge is unknown, expired or already used: start again with Hello")
        case .badProof:
            logger.warning("refused a join: the proof does not verify (wrong run token)", metadata: ["peer": "\(peer)", "worker": "\(proof.workerName)"])
            return refusal(.badProof, "the proof does not verify: this worker's token is not the run's token")
        case .accepted:
            break
        }
        // A deterministic run needs the same bits from every worker for the same micro-batch: the
        // first worker fixes the run's compute signature (kept in checkpoints), others must match.
        if config.deterministic {
            let theirs = proof.computeSignature.isEmpty ? "(not reported)" : proof.computeSignature
            if let required = computeSignature, required != proof.computeSignature {
                logger.warning("refused a worker: deterministic runs need every worker to compute the same bits",
                               metadata: ["peer": "\(peer)", "worker": "\(proof.workerName)", "theirs": "\(theirs)", "run": "\(required)"])
                return refusal(.incompatible, "deterministic: true needs every worker to compute the same bits: this worker has \(theirs), the run's workers \(required). Run it on a machine of the same CPU type, or set OPENBLAS_CORETYPE on every machine to one kernel they all support")
            }
            if computeSignature == nil {
                computeSignature = proof.computeSignature
                logger.info("deterministic run: every worker must compute with \(theirs)")
            }
        }
        let session = SessionID(randomBytes(JoinHandshake.sessionBytes))
        let member = membership.join(name: proof.workerName, session: session, pipe: pipe, now: Monotonic.now)
        workerNames.insert(proof.workerName)
        logger.info("worker joined", metadata: ["worker": "\(member.name)", "id": "\(member.id)", "peer": "\(peer)",
                                                "session": "\(session)", "members": "\(membership.count)"])
        progress(.membership(workers: membership.count))
        var welcome = Csptrain_V1_Welcome()
        welcome.workerID = member.id
        welcome.serverMac = handshake.serverMAC(clientNonce: proof.clientNonce, serverNonce: proof.serverNonce, session: session.bytes)
        welcome.configYaml = configYAML
        welcome.tensors = WireCodec.tensorInfos(layout)
        welcome.chunkValues = UInt32(config.coordinator.chunkValues)
        welcome.dataFingerprint = dataFingerprint
        var reply = Reply()
        reply.header = header(session: session.bytes)
        reply.welcome = welcome
        if !started, membership.count >= config.coordinator.minWorkers {
            started = true
            stepStarted = Monotonic.now
            logger.info("starting: \(membership.count) worker(s) present", metadata: ["step": "\(step)"])
        }
        serveWaiters()
        return reply
    }

    // MARK: Work

    private func workRequest(session: SessionID, haveVersion: UInt64) async -> Reply {
        // A worker asking for work has nothing in progress: whatever it still holds (a task whose
        // reply was lost and re-requested, a task it gave up) goes back to the pool, so a repeated
        // request never strands a micro-batch until its deadline.
        round.release(session)
        evalRound?.release(session)
        if let reply = tryAssign(session: session, haveVersion: haveVersion) { return reply }
        let holdUntil = Monotonic.now + config.coordinator.pollHoldSeconds
        return await withCheckedContinuation { continuation in
            waiters.append(Waiter(session: session, haveVersion: haveVersion, holdUntil: holdUntil, continuation: continuation))
        }
    }

    /// A Task, Finished, or nil when there is nothing to hand out now.
    private func tryAssign(session: SessionID, haveVersion: UInt64) -> Reply? {
        if outcome != nil {
            toldFinished.insert(session)
            var reply = Reply()
            reply.header = header()
            reply.finished = Csptrain_V1_Finished.with { $0.reason = "the run is over (\(outcome!.status.rawValue))" }
            return reply
        }
        guard started, !ending else { return nil }
        let deadline = Monotonic.now + config.coordinator.stepDeadlineSeconds
        if evalRound != nil {
            guard let batch = evalRound!.assign(to: session, deadline: deadline) else { return nil }
            var task = Csptrain_V1_Task()
            task.kind = .eval
            task.evalSet = evalRound!.batches[batch].set
            task.microBatch = UInt32(batch)
            task.exampleIndices = evalRound!.batches[batch].examples.map { UInt64($0) }
            task.weightsVersion = evalRound!.weightsVersion
            task.deadlineMs = UInt32(clamping: Int(min(config.coordinator.stepDeadlineSeconds * 1000, Double(UInt32.max))))
            if haveVersion != evalRound!.weightsVersion { task.weights = weightsMessage(for: haveVersion, current: evalRound!.weightsVersion) }
            var reply = Reply()
            reply.header = header()
            reply.task = task
            return reply
        }
        guard let mb = round.assign(to: session, deadline: deadline) else { return nil }
        var task = Csptrain_V1_Task()
        task.microBatch = UInt32(mb)
        task.exampleIndices = round.microBatches[mb].examples.map { UInt64($0) }
        task.weightsVersion = round.weightsVersion
        task.epoch = UInt64(order.epoch(ofStep: step))
        task.deadlineMs = UInt32(clamping: Int(min(config.coordinator.stepDeadlineSeconds * 1000, Double(UInt32.max))))
        if haveVersion != round.weightsVersion { task.weights = weightsMessage(for: haveVersion, current: round.weightsVersion) }
        var reply = Reply()
        reply.header = header()
        reply.task = task
        return reply
    }

    /// Answers held work requests that can be answered now.
    private func serveWaiters() {
        guard !waiters.isEmpty else { return }
        let now = Monotonic.now
        var still: [Waiter] = []
        for w in waiters {
            if outcome == nil, membership.members[w.session] == nil {
                w.continuation.resume(returning: refusal(.unknownSession, "session \(w.session) was dropped: join again"))
            } else if let reply = tryAssign(session: w.session, haveVersion: w.haveVersion) {
                w.continuation.resume(returning: reply)
            } else if now >= w.holdUntil {
                var reply = Reply()
                reply.header = header()
                reply.wait = Csptrain_V1_Wait.with { $0.retryAfterMs = 0 }
                w.continuation.resume(returning: reply)
            } else {
                still.append(w)
            }
        }
        waiters = still
    }

    // MARK: Gradients

    private func receive(_ chunk: Csptrain_V1_GradientChunk, step chunkStep: Int, session: SessionID, peer: String) -> Reply {
        var reply = Reply()
        reply.header = header()
        guard outcome == nil, !ending else {
            // The run is over: nothing may change the weights after the final checkpoint.
            staleChunks += 1
            reply.ack = Csptrain_V1_ChunkAck.with { $0.status = .stale }
            return reply
        }
        guard chunk.values.count % 4 == 0 else {
            return refusal(.malformed, "chunk values hold \(chunk.values.count) bytes, not a whole number of float32 values")
        }
        guard chunk.lossSum.isFinite, Self.allFinite(chunk.values) else {
            logger.warning("refused a gradient chunk with non-finite values (diverging model on that worker?)",
                           metadata: ["peer": "\(peer)", "session": "\(session)", "micro_batch": "\(chunk.microBatch)"])
            return refusal(.malformed, "the chunk's loss_sum or values are not finite")
        }
        let verdict = round.receive(step: chunkStep, weightsVersion: chunk.weightsVersion, microBatch: Int(chunk.microBatch),
                                    tensor: Int(chunk.tensor), chunkIndex: Int(chunk.chunkIndex), chunkCount: Int(chunk.chunkCount),
                                    exampleCount: Int(chunk.exampleCount), valueCount: chunk.values.count / 4)
        switch verdict {
        case let .accept(offset, examples, first, completes):
            let ok = chunk.values.withUnsafeBytes { accumulator.fold(littleEndianBytes: $0, at: offset, weight: examples) }
            precondition(ok, "chunk geometry was validated by StepRound")
            if first { accumulator.addMicroBatch(Int(chunk.microBatch), examples: examples, lossSum: chunk.lossSum) }
            if completes, round.isComplete { completeStep() }
            reply.ack = Csptrain_V1_ChunkAck.with { $0.status = .accepted }
        case .duplicate:
            duplicateChunks += 1
            reply.ack = Csptrain_V1_ChunkAck.with { $0.status = .duplicate }
        case .stale:
            staleChunks += 1
            reply.ack = Csptrain_V1_ChunkAck.with { $0.status = .stale }
        case let .invalid(reason):
            logger.warning("refused a gradient chunk: \(reason)", metadata: ["peer": "\(peer)", "session": "\(session)"])
            return refusal(.malformed, reason)
        }
        return reply
    }

    /// From `init_from`'s model weights when given (the error names the checkpoint and what does
    /// not fit), else the model's seeded initialisation.
    static func initialWeights(config: RunConfiguration, model: any TrainableModel) throws -> [Float] {
        guard !config.initFrom.isEmpty else { return model.initialParameters(seed: config.seed) }
        let url: URL
        do { url = try CheckpointStore.resolve(config.initFrom) } catch { throw RunFolderError("init_from: \(error)") }
        do {
            let checkpoint = try CheckpointStore.load(url)
            return try checkpoint.flatValues(role: "param", layout: model.layout)
        } catch {
            throw RunFolderError("init_from: \(url.path): \(error) (the checkpoint must come from the same model configuration)")
        }
    }

    /// True when every little-endian float32 in `bytes` is finite.
    static func allFinite(_ bytes: Data) -> Bool {
        bytes.withUnsafeBytes { raw in
            var ok = true
            for i in stride(from: 0, to: raw.count - 3, by: 4) {
                // exponent bits all ones: infinity or NaN
                ok = ok && (raw.loadUnaligned(fromByteOffset: i, as: UInt32.self).littleEndian & 0x7F80_0000) != 0x7F80_0000
            }
            return ok
        }
    }

    /// All micro-batches are in: update, project, broadcast, advance.
    private func completeStep() {
        let now = Monotonic.now
        if accumulator.overflows > 0 {
            let offset = accumulator.firstOverflowOffset ?? 0
            let tensor = layout.tensors.first { $0.range.contains(offset) }?.name ?? "?"
            finish(.failed, message: "step \(step + 1) not applied: its gradient sum left the range of deterministic mode's fixed-point accumulator (|Σ examples × gradient| ≥ 2^23 at \(accumulator.overflows) value(s), first in tensor '\(tensor)'): the model is diverging. The run folder's last checkpoint is intact: resume from it with a lower optimizer.learning_rate or a smaller optimizer.clip_norm, with --allow-changed-settings (both change the maths)")
            return
        }
        let loss = accumulator.meanLoss
        let examples = accumulator.examples
        var gradient = accumulator.mean()
        let norm = gradient.withUnsafeMutableBufferPointer { clipGlobalNorm($0, maxNorm: config.optimizer.clipNorm) }
        let lr = config.optimizer.learningRate * config.optimizer.schedule.factor(step: step, totalSteps: config.steps)
        weights.withUnsafeMutableBufferPointer { w in
            gradient.withUnsafeBufferPointer { g in optimizer.apply(gradient: g, to: w, learningRate: lr) }
        }
        let layout = self.layout
        let current = step
        let projectionStart = Monotonic.now
        let supportUpdate = broadcast.withUnsafeMutableBufferPointer { b in
            weights.withUnsafeMutableBufferPointer { w in
                gradient.withUnsafeBufferPointer { g in
                    projection.project(weights: w, gradient: g, step: current, learningRate: lr, layout: layout, broadcast: b)
                }
            }
        }
        if config.coordinator.broadcastValues == .f16 { broadcast.withUnsafeMutableBufferPointer { FloatEncoding.roundToHalf($0) } }
        let projectionSeconds = Monotonic.now - projectionStart
        // Nobody could be heard while the projection ran (a CSP support update takes seconds).
        membership.pardon(seconds: projectionSeconds, before: projectionStart)
        projectionSecondsTotal += projectionSeconds
        if let supportUpdate { logSupportUpdate(supportUpdate, seconds: projectionSeconds) }
        let sparsity = projection.sparsityReport(broadcast, layout: layout)
        reassignedMicroBatches += round.reassignments
        examplesProcessed += examples
        examplesSeen += examples
        let recorded = ledger.record(step: step + 1, parts: order.examplesByEpoch(forStep: step))
        do { try ledgerFiles.append(recorded.entries) } catch {
            logger.error("cannot append to the ledger in \(ledgerFiles.folder.path): \(error) (the checkpoints still hold it)")
        }
        for epoch in recorded.completedEpochs {
            // The next checkpoint keeps only a summary of this epoch: its file must be on disk first.
            ledgerFiles.sync(epoch: epoch.epoch)
            logger.info("epoch complete", metadata: ["epoch": "\(epoch.epoch)", "steps": "\(epoch.steps)", "examples": "\(epoch.examples)"])
        }
        if firstLoss == nil { firstLoss = loss }
        lastLoss = loss
        let seconds = now - stepStarted
        let record = StepMetrics(step: step + 1, loss: loss, gradNorm: norm, learningRate: lr, examples: examples,
                                 workers: membership.count, stepSeconds: seconds,
                                 examplesPerSecond: seconds > 0 ? Double(examples) / seconds : 0,
                                 duplicateChunks: duplicateChunks, staleChunks: staleChunks,
                                 reassignedMicroBatches: reassignedMicroBatches, sparsity: sparsity.prunable,
                                 projectionSeconds: projectionSeconds)
        step += 1
        stepStarted = now
        accumulator.reset()
        let sets = model.evaluationSets.filter { $0.value > 0 }
        let evalDue = config.coordinator.evalEverySteps > 0 && !sets.isEmpty
            && (step % config.coordinator.evalEverySteps == 0 || step >= config.steps)
        if config.checkpoint.everySteps > 0, step % config.checkpoint.everySteps == 0, step < config.steps {
            // After a validation, the checkpoint waits for it (nothing changes meanwhile): a kill
            // during the validation then resumes before the step and scores it again, so
            // metrics.jsonl never lacks the step's line.
            if evalDue { checkpointAfterEvaluation = true } else { submitCheckpoint() }
        }
        if step >= config.steps && !evalDue {
            var record = record
            record.wallSeconds = Monotonic.now - runStarted
            metrics.append(record)
            progress(.step(record, total: config.steps))
            finish(.completed, message: nil)
            return
        }
        let version = UInt64(step + 1)
        deltaMessage = WireCodec.weights(broadcast, layout: layout, version: version, previous: sentBroadcast,
                                         half: config.coordinator.broadcastValues == .f16)
        fullMessage = nil
        sentBroadcast = broadcast
        if step < config.steps {
            round = StepRound(step: step, weightsVersion: version, microBatches: order.microBatches(forStep: step), grid: grid)
        }
        if evalDue {
            // Score the weights the next step starts from; the step's metrics line waits for it.
            let limit = config.coordinator.evalExamples
            evalRound = EvalRound(step: step, weightsVersion: version,
                                  sets: sets.map { ($0.key, limit > 0 ? min(limit, $0.value) : $0.value) },
                                  batchSize: config.coordinator.evalBatch)
            evalCounts = [:]
            pendingMetrics = record
            finishAfterEval = step >= config.steps
            if evalRound!.isComplete {
                completeEvaluation()
                return
            }
        } else {
            var record = record
            record.wallSeconds = Monotonic.now - runStarted
            metrics.append(record)
            progress(.step(record, total: config.steps))
        }
        serveWaiters()
    }

    /// One line per support change and one per pruned layer: what was kept and how it was found.
    private func logSupportUpdate(_ stepUpdate: SupportUpdate, seconds: Double) {
        // Steps are counted from 1 in every file and log line.
        var update = stepUpdate
        update.step += 1
        logger.info("pruning: new support", metadata: [
            "step": "\(update.step)", "method": "\(projection.name)",
            "target_sparsity": "\(String(format: "%.4f", update.sparsity))", "seconds": "\(String(format: "%.3f", seconds))",
        ])
        for layer in update.layers {
            var metadata: Logger.Metadata = ["layer": "\(layer.name)", "density": "\(String(format: "%.4f", layer.density))"]
            if let r = layer.measurementRatio { metadata["m_over_b"] = "\(String(format: "%.3f", r))" }
            if let e = layer.recoveryError { metadata["recovery_error"] = "\(String(format: "%.3f", e))" }
            if let o = layer.overlapWithTopK { metadata["overlap_with_top_k"] = "\(String(format: "%.3f", o))" }
            logger.debug("pruning: layer support", metadata: metadata)
        }
        pruningLog.append(update)
    }

    private func receive(_ result: Csptrain_V1_EvalResult, session: SessionID, peer: String) -> Reply {
        var reply = Reply()
        reply.header = header()
        guard outcome == nil, !ending, evalRound != nil else {
            reply.ack = Csptrain_V1_ChunkAck.with { $0.status = .stale }
            return reply
        }
        switch evalRound!.receive(batch: Int(result.microBatch), set: result.evalSet, weightsVersion: result.weightsVersion) {
        case .accept:
            evalCounts[result.evalSet, default: EvaluationCounts()].add(EvaluationCounts(
                wordEdits: Int(result.wordEdits), words: Int(result.words), characterEdits: Int(result.charEdits),
                characters: Int(result.chars), utterances: Int(result.utterances)))
            reply.ack = Csptrain_V1_ChunkAck.with { $0.status = .accepted }
            if evalRound!.isComplete { completeEvaluation() }
        case .duplicate:
            reply.ack = Csptrain_V1_ChunkAck.with { $0.status = .duplicate }
        case .stale:
            reply.ack = Csptrain_V1_ChunkAck.with { $0.status = .stale }
        case let .invalid(reason):
            logger.warning("refused an evaluation result: \(reason)", metadata: ["peer": "\(peer)", "session": "\(session)"])
            return refusal(.malformed, reason)
        }
        return reply
    }

    private func completeEvaluation() {
        lastValidation = evalCounts
        if var record = pendingMetrics {
            record.validWer = evalCounts["valid"]?.wordErrorRate
            record.validWerChannel = evalCounts["valid_channel"]?.wordErrorRate
            record.validCer = evalCounts["valid"]?.characterErrorRate
            record.validCerChannel = evalCounts["valid_channel"]?.characterErrorRate
            record.wallSeconds = Monotonic.now - runStarted
            metrics.append(record)
            progress(.step(record, total: config.steps))
        }
        logger.info("validation", metadata: evalCounts.reduce(into: ["step": "\(step)"]) { m, e in
            m["wer_\(e.key)"] = "\(String(format: "%.4f", e.value.wordErrorRate))"
        })
        evalRound = nil
        pendingMetrics = nil
        if checkpointAfterEvaluation {
            checkpointAfterEvaluation = false
            submitCheckpoint()
        }
        // The time spent scoring is not the next step's.
        stepStarted = Monotonic.now
        if finishAfterEval {
            finish(.completed, message: nil)
        } else {
            serveWaiters()
        }
    }

    // MARK: Failures and time

    /// Called periodically: drops members past their deadline and answers held requests.
    func tick() {
        // Ending: the final checkpoint is being written; nobody is late for anything any more.
        guard !ending else { return }
        let now = Monotonic.now
        // Members that hold no work and have not asked for any for much longer than a held
        // request lasts are gone without a goodbye (a proof answered on a closed connection, a
        // worker that re-joined after a timeout): forget them.
        let silence = config.coordinator.pollHoldSeconds * 2 + 10
        for member in membership.members.values where now - member.lastSeen > silence {
            let holdsEval = evalRound?.batches.contains { if case .assigned(to: member.session, _) = $0.status { true } else { false } } ?? false
            if !holdsEval, !round.microBatches.indices.contains(where: { round.assignee(of: $0) == member.session }) {
                drop(member.session, reason: .silent, detail: "no request for \(Int(now - member.lastSeen)) s")
            }
        }
        for (session, batch) in evalRound?.expire(now: now) ?? [] {
            if let member = membership.members[session] {
                logger.warning("worker missed the deadline of an evaluation batch; dropping it and reassigning the batch",
                               metadata: ["worker": "\(member.name)", "batch": "\(batch)"])
                drop(member.session, reason: .missedDeadline, detail: nil)
            }
        }
        for (session, mb) in round.expire(now: now) {
            if let member = membership.members[session] {
                logger.warning("worker missed the step deadline; dropping it and reassigning its micro-batch",
                               metadata: ["worker": "\(member.name)", "id": "\(member.id)", "step": "\(step)", "micro_batch": "\(mb)",
                                          "deadline_s": "\(config.coordinator.stepDeadlineSeconds)"])
                drop(session, reason: .missedDeadline, detail: nil)
            }
        }
        serveWaiters()
    }

    /// A connection closed: its members are gone and their micro-batches go to others.
    func pipeClosed(_ pipe: UInt32) {
        for member in membership.removeAll(onPipe: pipe) {
            evalRound?.release(member.session)
            let released = round.release(member.session)
            // After the run ends, workers leaving is the expected goodbye.
            logger.log(level: outcome == nil ? .warning : .debug, "worker disconnected", metadata: ["worker": "\(member.name)", "id": "\(member.id)",
                                                             "reassigned_micro_batches": "\(released)", "members": "\(membership.count)"])
            progress(.membership(workers: membership.count))
        }
        serveWaiters()
    }

    private func drop(_ session: SessionID, reason: Membership.Reason, detail: String?) {
        guard let member = membership.remove(session, reason: reason) else { return }
        evalRound?.release(session)
        let released = round.release(session)
        logger.info("worker removed: \(reason.rawValue)", metadata: ["worker": "\(member.name)", "id": "\(member.id)",
                                                                      "reassigned_micro_batches": "\(released)", "detail": "\(detail ?? "")"])
        progress(.membership(workers: membership.count))
        serveWaiters()
    }

    // MARK: Ending

    /// Ends the run (completed, failed, or stopped by a signal): writes the final checkpoint,
    /// waits until it and any earlier one are on disk, then writes the summary. From here on no
    /// chunk is accepted and no task handed out.
    func finish(_ status: RunSummary.Status, message: String?) {
        guard outcome == nil, !ending else { return }
        ending = true
        if var record = pendingMetrics {
            // Stopped during a validation: the step's line goes out without it.
            record.wallSeconds = Monotonic.now - runStarted
            metrics.append(record)
            pendingMetrics = nil
        }
        // Nothing applied yet (a run that fails before its first step): no checkpoint, so the
        // same command can simply be run again.
        if step > lastSubmittedStep, step > 0 { submitCheckpoint() }
        Task {
            await writer.flush()
            conclude(status, message: message)
        }
    }

    private func conclude(_ status: RunSummary.Status, message: String?) {
        var message = message
        let latest = checkpoints.latestPath()
        if step > 0, latest?.lastPathComponent != checkpoints.path(forStep: step).lastPathComponent {
            let note = "the checkpoint of step \(step) could not be written (see the log); the newest one is \(latest?.path ?? "none")"
            message = message.map { $0 + "; " + note } ?? note
        }
        let sparsity = projection.sparsityReport(broadcast, layout: layout)
        let wall = Monotonic.now - runStarted
        var summary = RunSummary(status: status, runId: runID, steps: step, startStep: startStep, workersSeen: workerNames.count,
                                 workersFailed: membership.failedTotal, firstLoss: firstLoss, finalLoss: lastLoss,
                                 sparsity: sparsity.prunable, sparsityOverall: sparsity.overall, checkpoint: latest?.path,
                                 wallSeconds: wall, examplesPerSecond: wall > 0 ? Double(examplesProcessed) / wall : 0,
                                 duplicateChunks: duplicateChunks, staleChunks: staleChunks,
                                 reassignedMicroBatches: reassignedMicroBatches,
                                 validWer: lastValidation["valid"]?.wordErrorRate,
                                 validWerChannel: lastValidation["valid_channel"]?.wordErrorRate, message: message)
        summary.pruningMethod = projection.name
        summary.projectionSeconds = projectionSecondsTotal
        summary.deterministic = config.deterministic
        summary.resumedFrom = resumedFrom
        outcome = summary
        do { try folder.write(summary.json() + "\n", to: folder.summaryFile) } catch {
            logger.error("\(error)")
        }
        logger.info("run \(status.rawValue)", metadata: ["steps": "\(step)", "final_loss": "\(lastLoss ?? .nan)"])
        serveWaiters()
        for c in finishedContinuations { c.resume(returning: summary) }
        finishedContinuations = []
    }

    /// Waits for the run to end.
    func waitUntilFinished() async -> RunSummary {
        if let outcome { return outcome }
        return await withCheckedContinuation { finishedContinuations.append($0) }
    }

    /// True when every member has been told the run is over (so the socket can close).
    var everyoneToldFinished: Bool {
        membership.members.keys.allSatisfy { toldFinished.contains($0) }
    }

    /// Snapshots the state of step `step` and hands it to the writer thread: the step loop goes
    /// on while it is encoded and written.
    private func submitCheckpoint() {
        let snapshotStart = Monotonic.now
        let state = TrainingState(step: step, broadcast: broadcast, weights: weights, optimizer: optimizer,
                                  projection: projection.checkpointState, ledger: ledger, examplesSeen: examplesSeen,
                                  lastLoss: lastLoss ?? .nan)
        let context = TrainingState.Context(runID: runID, configYAML: configYAML, fingerprint: fingerprint, layout: layout,
                                            modelRecords: model.checkpointRecords, config: config, projectionName: projection.name,
                                            examplesPerEpoch: model.trainingExamples)
        var checkpoint = state.checkpoint(context)
        checkpoint.state.computeSignature = computeSignature ?? ""
        lastSubmittedStep = step
        let logger = self.logger
        let snapshotSeconds = String(format: "%.4f", Monotonic.now - snapshotStart)
        writer.submit(checkpoint) { step, result, seconds, bytes in
            switch result {
            case let .success(url):
                logger.debug("checkpoint written", metadata: ["step": "\(step)", "path": "\(url.path)", "bytes": "\(bytes)",
                                                              "snapshot_seconds": "\(snapshotSeconds)",
                                                              "write_seconds": "\(String(format: "%.3f", seconds))"])
            case let .failure(error):
                if case let .io(_, what) = error, what.hasPrefix("superseded") {
                    logger.debug("checkpoint of step \(step) skipped: \(what)")
                } else {
                    logger.error("checkpoint of step \(step) not written: \(error)")
                }
            }
        }
    }
}

/// What the coordinator reports to a progress display.
public enum ProgressEvent: Sendable {
    case step(StepMetrics, total: Int)
    case membership(workers: Int)
}
