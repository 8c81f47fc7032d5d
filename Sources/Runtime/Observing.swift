import Observe

extension RunObserver.Step {
    /// The observer's copy of a metrics.jsonl line.
    init(_ m: StepMetrics, sparsityOverall: Double) {
        self.init(step: m.step, loss: m.loss, learningRate: m.learningRate, examples: m.examples, stepSeconds: m.stepSeconds,
                  examplesPerSecond: m.examplesPerSecond, sparsity: m.sparsity, sparsityOverall: sparsityOverall,
                  projectionSeconds: m.projectionSeconds, wallSeconds: m.wallSeconds, validWer: m.validWer,
                  validWerChannel: m.validWerChannel, validWerSeen: m.validWerSeen)
    }
}
