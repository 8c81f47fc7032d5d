import Configuration
import Observe

extension RunObserver.Run {
    /// What the HTTP endpoint shows of a run from its start.
    init(_ config: RunConfiguration, parts: CoordinatorParts) {
        let pruning = config.pruning.method != .none
        self.init(runID: parts.machine.runID, totalSteps: config.steps, startStep: parts.machine.step,
                  method: parts.server.projection.name,
                  layers: parts.model.layout.tensors.filter(\.prunable).map(\.name),
                  goalSparsity: pruning ? config.pruning.schedule.target : nil,
                  goalWer: config.observe.goalWer > 0 ? config.observe.goalWer : nil,
                  departedSeriesSeconds: config.observe.departedSeriesSeconds)
    }
}

extension RunObserver.Step {
    /// The observer's copy of a metrics.jsonl line.
    init(_ m: StepMetrics, sparsityOverall: Double) {
        self.init(step: m.step, loss: m.loss, learningRate: m.learningRate, examples: m.examples, stepSeconds: m.stepSeconds,
                  examplesPerSecond: m.examplesPerSecond, sparsity: m.sparsity, sparsityOverall: sparsityOverall,
                  projectionSeconds: m.projectionSeconds, wallSeconds: m.wallSeconds, validWer: m.validWer,
                  validWerChannel: m.validWerChannel, validWerSeen: m.validWerSeen)
    }
}
