import Checkpoints
import Configuration
import Coordination
import Foundation
import Logging
import Models
import ParameterServer
import Pruning
import Tasks
import Tensors
import Training

/// What a coordinator is made of, built from a configuration and where the run starts: the model
/// (its layout and data), the run state machine, the parameter server and the state that is not
/// numbers (ledger, examples seen). A resume's checks happen here, before anything is written.
struct CoordinatorParts {
    let model: any TrainableModel
    var machine: RunStateMachine
    let server: ParameterServer
    var ledger: RunLedger
    var examplesSeen: Int
    var lastLoss: Double?
    let fingerprint: MathsFingerprint
    let resumedFrom: String?

    init(config: RunConfiguration, runID: String, token: [UInt8], folder: RunFolder, logger: Logger, start: RunStart,
         now: Double, clock: @escaping @Sendable () -> Double) throws {
        var resume: Checkpoint?
        var allowChangedSettings = false
        var resumePath: String?
        if case let .resume(checkpoint, url, allow) = start {
            resume = checkpoint
            allowChangedSettings = allow
            resumePath = url.path
        }
        resumedFrom = resumePath
        model = try ModelFactory.make(model: config.model, data: config.data, augmentation: config.augmentation, seed: config.seed)
        let layout = model.layout
        // A resumed run takes its weights from the checkpoint (init_from may not even exist here).
        let initial = resume == nil ? try Self.initialWeights(config: config, model: model) : []
        // Pruning starts after the first update (the schedule's start step); step 0 is dense.
        var firstBroadcast = initial
        if config.coordinator.broadcastValues == .f16 { firstBroadcast.withUnsafeMutableBufferPointer { FloatEncoding.roundToHalf($0) } }
        for advisory in config.pruning.advisories { logger.warning("\(advisory)") }
        var projection: any ProjectionStep
        do { projection = try config.pruning.makeProjection(layout: layout, seed: config.seed, sites: model.statisticSites) } catch {
            throw RunFolderError("\(error)")
        }
        fingerprint = MathsFingerprint(config: config, dataFingerprint: model.trainingDataFingerprint)
        var state = TrainingState(step: 0, broadcast: firstBroadcast, weights: initial,
                                  optimizer: Optimizer(settings: config.optimizer, parameterCount: layout.totalCount),
                                  projection: ProjectionState(), ledger: RunLedger(examplesPerEpoch: model.trainingExamples),
                                  examplesSeen: 0, lastLoss: .nan)
        if let resume {
            let source = resumePath ?? "the checkpoint"
            guard resume.formatVersion >= 2 else {
                throw RunFolderError("\(source) is in checkpoint format version \(resume.formatVersion), written before csptrain kept what an exact resume needs (optimizer counter, pruning state, ledger); start a new run from its weights with --set init_from=\(source) instead")
            }
            let differences = fingerprint.differences(from: MathsFingerprint(text: resume.mathsSettings))
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
            if config.optimizer.schedule.decay == .cosine,
               let before = try? RunConfiguration.parse(yaml: resume.configYAML, source: "the checkpoint"), before.steps != config.steps {
                logger.warning("steps changed from \(before.steps) to \(config.steps): the cosine learning-rate schedule now decays over \(config.steps) steps, so the rates from step \(resume.step + 1) on differ from the original run's")
            }
        }
        // Idempotent on a checkpoint of an f16 run; needed when the precision changed on resume
        // (--allow-changed-settings): workers must compute with exactly what the server holds.
        if resume != nil, config.coordinator.broadcastValues == .f16 {
            state.broadcast.withUnsafeMutableBufferPointer { FloatEncoding.roundToHalf($0) }
        }
        ledger = state.ledger
        examplesSeen = state.examplesSeen
        lastLoss = resume != nil && state.lastLoss.isFinite ? state.lastLoss : nil
        let signature = resume?.state.computeSignature
        server = ParameterServer(layout: layout,
                                 settings: .init(optimizer: config.optimizer, totalSteps: config.steps, fixedPoint: config.deterministic,
                                                 halfBroadcast: config.coordinator.broadcastValues == .f16),
                                 weights: state.weights, broadcast: state.broadcast, optimizer: state.optimizer,
                                 projection: projection, version: UInt64(state.step + 1), timer: clock)
        let order = DataOrder(seed: config.seed, examples: model.trainingExamples, globalBatch: config.coordinator.globalBatch,
                              microBatches: config.coordinator.microBatches, costs: model.exampleCosts,
                              groupingWindow: config.coordinator.lengthGrouping)
        // Gradients, then the input statistics the projection reads (ExchangeLayout).
        let grid = ChunkGrid(tensors: server.exchange.combined.tensors.map { ($0.offset, $0.count) },
                             chunkValues: config.coordinator.chunkValues(forValues: server.exchange.totalCount))
        var settings = Self.machineSettings(config, evaluationSets: model.evaluationSets)
        if config.deterministic {
            (settings.computeSignature, settings.computeSignatureOrigin) = Self.runSignature(config: config, checkpoint: signature)
            if let resumed = signature, !resumed.isEmpty, resumed != settings.computeSignature {
                logger.warning("the checkpoint was computed with '\(resumed)', this run needs '\(settings.computeSignature ?? "")' (\(settings.computeSignatureOrigin)): its steps are not bit-identical to the interrupted run's")
            }
        }
        machine = RunStateMachine(settings: settings, runID: runID, token: token, order: order, grid: grid, step: state.step, now: now)
    }

    static func machineSettings(_ config: RunConfiguration, evaluationSets: [String: Int]) -> RunStateMachine.Settings {
        let c = config.coordinator
        var s = RunStateMachine.Settings(totalSteps: config.steps)
        s.minWorkers = c.minWorkers
        s.stepDeadlineSeconds = c.stepDeadlineSeconds
        s.pollHoldSeconds = c.pollHoldSeconds
        s.waitForWorkersSeconds = c.waitForWorkersSeconds > 0 ? c.waitForWorkersSeconds : nil
        s.maxRequestsInFlight = c.maxRequestsInFlight
        s.evalEverySteps = c.evalEverySteps
        s.evalSets = evaluationSets.filter { $0.value > 0 }.mapValues { c.evalExamples > 0 ? min(c.evalExamples, $0) : $0 }
        s.evalBatch = c.evalBatch
        s.checkpointEverySteps = config.checkpoint.everySteps
        s.snapshotSteps = config.pruning.method == .none ? [] : Set(config.pruning.schedule.holds.map(\.snapshotStep))
        s.checkpointFailuresToStop = config.checkpoint.onWriteFailure == .stop ? CheckpointSettings.failedWritesBeforeStop : nil
        let security = config.security
        s.maxWorkers = security.maxWorkers > 0 ? security.maxWorkers : nil
        s.joinAttemptsPerMinute = security.joinAttemptsPerMinute > 0 ? security.joinAttemptsPerMinute : nil
        s.protocolVersion = Wire.protocolVersion
        return s
    }

    /// A deterministic run's compute signature and where it came from: the configuration's
    /// `compute_signature`, else a resumed checkpoint's, else this coordinator's own. Never a worker's.
    static func runSignature(config: RunConfiguration, checkpoint: String?) -> (String, String) {
        if !config.computeSignature.isEmpty { return (config.computeSignature, "compute_signature in the run's configuration") }
        if let checkpoint, !checkpoint.isEmpty { return (checkpoint, "the signature of the checkpoint this run resumed from") }
        return (BLASRuntime.computeSignature, "the coordinator's own; pin another with compute_signature in the run's configuration")
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
}

import Wire
