import Tensors

/// The inputs of the encoder's linear maps, for the pruning methods that weigh a weight by what
/// it multiplies (``InputMomentRecorder``). Site names carry the encoder's tensor prefix
/// (none for CTC, `transcriber.` for the transducer).
extension SpeechEncoder {
    /// `<prefix>conv.<n>` (im2col patches, d = Cin·k), `<prefix>lstm.l<n>.input` (read by both
    /// directions' W_ih), `<prefix>lstm.l<n>[_reverse].recurrent` (h_{t−1}, read by W_hh).
    func statisticSites(prefix: String) -> [StatisticSite] {
        var sites: [StatisticSite] = []
        for (n, conv) in convs.enumerated() {
            sites.append(StatisticSite(name: "\(prefix)conv.\(n)", dimension: conv.inChannels * conv.kernel, tensors: [conv.weight.name]))
        }
        for (n, directions) in lstm.enumerated() {
            sites.append(StatisticSite(name: "\(prefix)lstm.l\(n).input", dimension: directions[0].inputSize, tensors: directions.map(\.weightIH.name)))
            for d in directions {
                sites.append(StatisticSite(name: Self.recurrentSite(prefix, n, reverse: d.reverse), dimension: d.hidden, tensors: [d.weightHH.name]))
            }
        }
        return sites
    }

    static func recurrentSite(_ prefix: String, _ layer: Int, reverse: Bool) -> String {
        "\(prefix)lstm.l\(layer)\(reverse ? "_reverse" : "").recurrent"
    }

    /// Records every asked-for site's inputs from a forward pass. Padding rows are zero (they add
    /// nothing) except the LSTM states, which are carried past a sequence's end and are copied
    /// out for the steps that use them.
    func record(_ f: Forward, prefix: String, into moments: inout InputMomentRecorder) {
        for (n, cache) in f.convCaches.enumerated() where moments.wants("\(prefix)conv.\(n)") {
            let rows = cache.output.steps * cache.output.batch
            cache.cols.withUnsafeBufferPointer {
                moments.record("\(prefix)conv.\(n)", rows: $0, count: rows, frames: cache.output.lengths.reduce(0, +))
            }
        }
        for (n, directions) in lstm.enumerated() {
            let input = f.lstmInputs[n]
            if moments.wants("\(prefix)lstm.l\(n).input") {
                input.values.withUnsafeBufferPointer {
                    moments.record("\(prefix)lstm.l\(n).input", rows: $0, count: input.steps * input.batch, frames: input.lengths.reduce(0, +))
                }
            }
            for (d, direction) in directions.enumerated() {
                Self.recordRecurrent(Self.recurrentSite(prefix, n, reverse: direction.reverse), states: f.lstmCaches[n][d].states,
                                     lengths: input.lengths, steps: input.steps, hidden: direction.hidden, into: &moments)
            }
        }
    }

    /// h_{t−1} feeds step t for 1 ≤ t < length: rows (t − 1, b) of an LSTM direction's states.
    static func recordRecurrent(_ site: String, states: [Float], lengths: [Int], steps: Int, hidden H: Int,
                                into moments: inout InputMomentRecorder) {
        guard moments.wants(site) else { return }
        let B = lengths.count
        var rows: [Float] = []
        rows.reserveCapacity(states.count)
        var count = 0
        for t in 0 ..< max(0, steps - 1) {
            for b in 0 ..< B where t + 1 < lengths[b] {
                let start = (t * B + b) * H
                rows.append(contentsOf: states[start ..< start + H])
                count += 1
            }
        }
        rows.withUnsafeBufferPointer { moments.record(site, rows: $0, count: count, frames: count) }
    }
}
