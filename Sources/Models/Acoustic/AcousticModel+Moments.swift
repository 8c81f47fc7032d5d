import Tensors

/// The inputs of the acoustic model's linear maps, for the pruning methods that weigh a weight by
/// what it multiplies (``InputMomentRecorder``).
extension AcousticModel {
    /// The encoder's sites (``SpeechEncoder/statisticSites(prefix:)``: `conv.<n>`,
    /// `lstm.l<n>.input`, `lstm.l<n>[_reverse].recurrent`) and `output` (the top LSTM's output).
    public var statisticSites: [StatisticSite] {
        encoder.statisticSites(prefix: "") + [StatisticSite(name: "output", dimension: outputWeight.shape[1], tensors: [outputWeight.name])]
    }

    func record(_ f: Forward, into moments: inout InputMomentRecorder) {
        encoder.record(f.encoder, prefix: "", into: &moments)
        if moments.wants("output") {
            let top = f.top
            top.values.withUnsafeBufferPointer { moments.record("output", rows: $0, count: top.steps * top.batch, frames: top.lengths.reduce(0, +)) }
        }
    }
}
