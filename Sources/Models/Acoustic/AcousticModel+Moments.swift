import Tensors

/// The inputs of the acoustic model's linear maps, for the pruning methods that weigh a weight by
/// what it multiplies (``InputMomentRecorder``).
extension AcousticModel {
    /// `conv.<n>` (im2col patches, d = Cin·k), `lstm.l<n>.input` (read by both directions' W_ih),
    /// `lstm.l<n>[_reverse].recurrent` (h_{t−1}, read by W_hh) and `output` (the top LSTM's output).
    public var statisticSites: [StatisticSite] {
        var sites: [StatisticSite] = []
        for (n, conv) in convs.enumerated() {
            sites.append(StatisticSite(name: "conv.\(n)", dimension: conv.inChannels * conv.kernel, tensors: [conv.weight.name]))
        }
        for (n, directions) in lstm.enumerated() {
            sites.append(StatisticSite(name: "lstm.l\(n).input", dimension: directions[0].inputSize, tensors: directions.map(\.weightIH.name)))
            for d in directions {
                sites.append(StatisticSite(name: Self.recurrentSite(n, reverse: d.reverse), dimension: d.hidden, tensors: [d.weightHH.name]))
            }
        }
        sites.append(StatisticSite(name: "output", dimension: outputWeight.shape[1], tensors: [outputWeight.name]))
        return sites
    }

    static func recurrentSite(_ layer: Int, reverse: Bool) -> String { "lstm.l\(layer)\(reverse ? "_reverse" : "").recurrent" }

    /// Records every asked-for site's inputs from a forward pass. Padding rows are zero (they add
    /// nothing) except the LSTM states, which are carried past a sequence's end and are copied
    /// out for the steps that use them.
    func record(_ f: Forward, into moments: inout InputMomentRecorder) {
        for (n, cache) in f.encoder.convCaches.enumerated() where moments.wants("conv.\(n)") {
            let rows = cache.output.steps * cache.output.batch
            cache.cols.withUnsafeBufferPointer {
                moments.record("conv.\(n)", rows: $0, count: rows, frames: cache.output.lengths.reduce(0, +))
            }
        }
        for (n, directions) in lstm.enumerated() {
            let input = f.encoder.lstmInputs[n]
            if moments.wants("lstm.l\(n).input") {
                input.values.withUnsafeBufferPointer {
                    moments.record("lstm.l\(n).input", rows: $0, count: input.steps * input.batch, frames: input.lengths.reduce(0, +))
                }
            }
            for (d, direction) in directions.enumerated() where moments.wants(Self.recurrentSite(n, reverse: direction.reverse)) {
                // h_{t−1} feeds step t for 1 ≤ t < length: rows (t − 1, b) of the states.
                let states = f.encoder.lstmCaches[n][d].states, B = input.batch, H = direction.hidden
                var rows: [Float] = []
                rows.reserveCapacity(states.count)
                var count = 0
                for t in 0 ..< max(0, input.steps - 1) {
                    for b in 0 ..< B where t + 1 < input.lengths[b] {
                        rows.append(contentsOf: states[(t * B + b) * H ..< (t * B + b + 1) * H])
                        count += 1
                    }
                }
                rows.withUnsafeBufferPointer { moments.record(Self.recurrentSite(n, reverse: direction.reverse), rows: $0, count: count, frames: count) }
            }
        }
        if moments.wants("output") {
            let top = f.top
            top.values.withUnsafeBufferPointer { moments.record("output", rows: $0, count: top.steps * top.batch, frames: top.lengths.reduce(0, +)) }
        }
    }
}
