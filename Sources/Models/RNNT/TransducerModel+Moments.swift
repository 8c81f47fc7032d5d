import Tensors

/// The inputs of the transducer's linear maps, for the pruning methods that weigh a weight by what
/// it multiplies (``InputMomentRecorder``), so that every matrix can be pruned by every method.
extension TransducerModel {
    /// The transcriber's encoder sites (`transcriber.conv.<n>`, `transcriber.lstm.l<n>.input`,
    /// `...recurrent`), `transcriber.output_linear` (the encoder's output), `predictor.embedding`,
    /// `predictor.lstm.l<n>.input` and `.recurrent`, `predictor.linear` (the LSTM's output) and
    /// `joiner.linear` (tanh(f_t + g_u) at every lattice node).
    ///
    /// The embedding is a lookup: entry (k, j) reaches output j alone, multiplied by the indicator
    /// of label k, the same for every j of the row. Its site records that as n · I (n lookups), so
    /// the methods that weigh by the inputs rank each row by magnitude and compensate nothing,
    /// which is what a lookup table's rows call for; `activation-sketch` leaves it unsketched.
    public var statisticSites: [StatisticSite] {
        var sites = encoder.statisticSites(prefix: "transcriber.")
        sites.append(StatisticSite(name: "transcriber.output_linear", dimension: encoderProjection.inputs, tensors: [encoderProjection.weight.name]))
        sites.append(StatisticSite(name: "predictor.embedding", dimension: transducer.predictorEmbedding, tensors: [embedding.name],
                                   diagonal: true))
        for (n, d) in predictor.enumerated() {
            sites.append(StatisticSite(name: "predictor.lstm.l\(n).input", dimension: d.inputSize, tensors: [d.weightIH.name]))
            sites.append(StatisticSite(name: "predictor.lstm.l\(n).recurrent", dimension: d.hidden, tensors: [d.weightHH.name]))
        }
        sites.append(StatisticSite(name: "predictor.linear", dimension: predictorProjection.inputs, tensors: [predictorProjection.weight.name]))
        sites.append(StatisticSite(name: "joiner.linear", dimension: joint.inputs, tensors: [joint.weight.name]))
        return sites
    }

    /// Records the asked-for sites of the transcription and prediction networks (the joiner's
    /// inputs are recorded per utterance, where they are made).
    func record(_ enc: Encoded, _ pred: Predicted, into moments: inout InputMomentRecorder) {
        encoder.record(enc.encoder, prefix: "transcriber.", into: &moments)
        let top = enc.encoder.output
        if moments.wants("transcriber.output_linear") {
            top.values.withUnsafeBufferPointer {
                moments.record("transcriber.output_linear", rows: $0, count: top.steps * top.batch, frames: top.lengths.reduce(0, +))
            }
        }
        let lookups = pred.input.lengths.reduce(0, +)
        if moments.wants("predictor.embedding") {
            let E = transducer.predictorEmbedding, scale = Float(lookups).squareRoot()
            var rows = [Float](repeating: 0, count: E * E)   // √n · I: Σ x xᵀ = n · I
            for j in 0 ..< E { rows[j * E + j] = scale }
            rows.withUnsafeBufferPointer { moments.record("predictor.embedding", rows: $0, count: E, frames: lookups) }
        }
        for (n, d) in predictor.enumerated() {
            let input = pred.layerInputs[n]
            if moments.wants("predictor.lstm.l\(n).input") {
                input.values.withUnsafeBufferPointer {
                    moments.record("predictor.lstm.l\(n).input", rows: $0, count: input.steps * input.batch, frames: lookups)
                }
            }
            SpeechEncoder.recordRecurrent("predictor.lstm.l\(n).recurrent", states: pred.caches[n].states, lengths: input.lengths,
                                          steps: input.steps, hidden: d.hidden, into: &moments)
        }
        if moments.wants("predictor.linear") {
            pred.top.values.withUnsafeBufferPointer {
                moments.record("predictor.linear", rows: $0, count: pred.top.steps * pred.top.batch, frames: lookups)
            }
        }
    }
}
