import Checkpoints
import Configuration
import FileIO
import Coordination
import Foundation
import Pruning
import Tensors
import Training
import Wire

#if canImport(Glibc)
import Glibc
#endif

/// The coordinator's state at a step boundary, and its mapping to and from checkpoint records.
///
/// Everything a step's result depends on is here or is a pure function of the configuration and
/// the step: the data order and every random draw (keyed by seed, epoch and example), the
/// learning-rate and sparsity schedules. So a run resumed from this state computes, step for
/// step, what the interrupted one would have.
struct TrainingState {
    /// Steps applied.
    var step: Int
    /// What workers compute with (the projection of `weights`).
    var broadcast: [Float]
    /// The optimizer's dense master copy.
    var weights: [Float]
    var optimizer: Optimizer
    var projection: ProjectionState
    var ledger: RunLedger
    var examplesSeen: Int
    var lastLoss: Double

    // MARK: To a checkpoint

    struct Context {
        let runID: String
        let configYAML: String
        let fingerprint: MathsFingerprint
        let layout: ParameterLayout
        let modelRecords: [(name: String, values: [Float])]
        let config: RunConfiguration
        let projectionName: String
        let examplesPerEpoch: Int
    }

    func checkpoint(_ c: Context) -> Checkpoint {
        // The model is what the workers compute with (for the dual methods, Z; with f16
        // broadcasts, the rounded weights); the master weights go beside it wherever a bit differs.
        var records = c.layout.tensors.map { spec in
            Checkpoint.Record(name: spec.name, shape: spec.shape, role: "param", values: Array(broadcast[spec.range]))
        }
        for spec in c.layout.tensors where !Self.bitwiseEqual(weights[spec.range], broadcast[spec.range]) {
            records.append(Checkpoint.Record(name: spec.name, shape: spec.shape, role: "master", values: Array(weights[spec.range])))
        }
        for extra in c.modelRecords {
            records.append(Checkpoint.Record(name: extra.name, shape: [extra.values.count], role: "normalization", values: extra.values))
        }
        for slot in optimizer.slots {
            records.append(Checkpoint.Record(name: "all", shape: [slot.values.count], role: "optimizer/\(slot.name)", values: slot.values))
        }
        for key in projection.floats.keys.sorted() {
            let v = projection.floats[key]!
            records.append(Checkpoint.Record(name: key, shape: [v.count], role: "pruning", values: v))
        }
        for key in projection.masks.keys.sorted() {
            records.append(Checkpoint.Record(name: key, role: "pruning-mask", bytes: Bits.pack(projection.masks[key]!)))
        }
        records.append(Checkpoint.Record(name: "ledger", role: "ledger", bytes: Self.encode(ledger)))

        var state = Csptrain_V1_TrainingState()
        let g = c.config.coordinator.globalBatch
        state.epoch = UInt64(step * g / c.examplesPerEpoch)
        state.positionInEpoch = UInt64((step * g) % c.examplesPerEpoch)
        state.examplesPerEpoch = UInt64(c.examplesPerEpoch)
        state.globalBatch = UInt64(g)
        state.examplesSeen = UInt64(examplesSeen)
        state.optimizerSteps = UInt64(optimizer.t)
        state.learningRateFactor = c.config.optimizer.schedule.factor(step: step, totalSteps: c.config.steps)
        state.deterministic = c.config.deterministic
        state.accumulationScaleBits = c.config.deterministic ? UInt32(GradientAccumulator.scaleBits) : 0
        state.rngSeed = c.config.seed
        state.rng = "SeededRandom: SplitMix64 finaliser of (key, counter), key = mix(seed, purpose, epoch, example)"
        state.projection = c.projectionName
        state.projectionIntegers = projection.integers
        state.scheduleSparsity = c.config.pruning.method == .none ? 0 : c.config.pruning.schedule.sparsity(atStep: step)
        state.blasCore = BLASRuntime.coreName
        return Checkpoint(step: step, runID: c.runID, configYAML: c.configYAML, lastLoss: lastLoss,
                          mathsSettings: c.fingerprint.text, state: state, records: records)
    }

    // MARK: From a checkpoint

    /// Rebuilds the state saved in `checkpoint` for a model of `layout`; errors say which record
    /// is missing or does not fit.
    static func restore(from checkpoint: Checkpoint, layout: ParameterLayout, optimizer settings: OptimizerSettings,
                        examplesPerEpoch: Int) throws -> TrainingState {
        let broadcast = try checkpoint.flatValues(role: "param", layout: layout)
        var weights = broadcast
        for spec in layout.tensors {
            guard let master = checkpoint.record(named: spec.name, role: "master") else { continue }
            guard master.shape == spec.shape else { throw CheckpointError.shapeMismatch(spec.name, expected: spec.shape, found: master.shape) }
            weights.replaceSubrange(spec.range, with: master.values)
        }
        let state = checkpoint.state
        func slot(_ name: String) throws -> [Float] {
            guard let r = checkpoint.record(named: "all", role: "optimizer/\(name)") else {
                throw RunFolderError("it has no optimizer state '\(name)' (was it written with another optimizer.kind?)")
            }
            guard r.values.count == layout.totalCount else {
                throw RunFolderError("optimizer state '\(name)' holds \(r.values.count) values, the model has \(layout.totalCount)")
            }
            return r.values
        }
        let m = try slot("m")
        let v = settings.kind == .sgd ? [] : try slot("v")
        let optimizer = Optimizer(settings: settings, t: Int(state.optimizerSteps), m: m, v: v)

        var projection = ProjectionState()
        projection.integers = state.projectionIntegers
        for r in checkpoint.records(role: "pruning") { projection.floats[r.name] = r.values }
        for r in checkpoint.records(role: "pruning-mask") {
            guard let bits = r.bytes, bits.count == (layout.totalCount + 7) / 8 else {
                throw RunFolderError("record 'pruning-mask/\(r.name)' holds \(r.bytes.map { "\($0.count) bytes" } ?? "floats"), a mask of \(layout.totalCount) parameters needs \((layout.totalCount + 7) / 8) bytes")
            }
            projection.masks[r.name] = Bits.unpack(bits, count: layout.totalCount)
        }
        guard let ledgerBytes = checkpoint.record(named: "ledger", role: "ledger")?.bytes else {
            throw RunFolderError("it has no ledger record")
        }
        let ledger = try decodeLedger(ledgerBytes, examplesPerEpoch: examplesPerEpoch)
        return TrainingState(step: checkpoint.step, broadcast: broadcast, weights: weights, optimizer: optimizer,
                             projection: projection, ledger: ledger, examplesSeen: Int(state.examplesSeen),
                             lastLoss: checkpoint.lastLoss)
    }

    // MARK: Pieces

    static func bitwiseEqual(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern }
    }


    static func encode(_ ledger: RunLedger) -> [UInt8] {
        var message = Csptrain_V1_Ledger()
        message.openSteps = ledger.open.map { entry in
            Csptrain_V1_LedgerStep.with {
                $0.step = UInt64(entry.step)
                $0.epoch = UInt64(entry.epoch)
                $0.examples = entry.examples.map { UInt32($0) }
            }
        }
        message.completed = ledger.completed.map { e in
            Csptrain_V1_LedgerEpoch.with { $0.epoch = UInt64(e.epoch); $0.steps = UInt64(e.steps); $0.examples = UInt64(e.examples) }
        }
        return (try? message.serializedBytes()) ?? []
    }

    static func decodeLedger(_ bytes: [UInt8], examplesPerEpoch: Int) throws -> RunLedger {
        let message: Csptrain_V1_Ledger
        do { message = try Csptrain_V1_Ledger(serializedBytes: bytes) } catch {
            throw RunFolderError("the checkpoint's ledger record does not parse: \(error)")
        }
        return RunLedger(examplesPerEpoch: examplesPerEpoch,
                         open: message.openSteps.map { .init(step: Int($0.step), epoch: Int($0.epoch), examples: $0.examples.map { Int($0) }) },
                         completed: message.completed.map { .init(epoch: Int($0.epoch), steps: Int($0.steps), examples: Int($0.examples)) })
    }
}
