import Foundation

/// The figures `csptrain plot` draws: a run's curves from its metrics.jsonl, and a pruning
/// sweep's WER against sparsity from its results.
public enum RunFigures {
    /// What a metrics.jsonl line holds that the curves need (other keys are ignored; a
    /// non-finite value was written as null and is skipped).
    public struct Line: Sendable, Equatable {
        public var step: Int
        public var wallSeconds: Double?
        public var loss: Double?
        public var validWer: Double?
        public var validWerChannel: Double?
        public var sparsity: Double?
        /// WER on `data.valid_seen` (training voices), when the run scores it.
        public var validWerSeen: Double? = nil
    }

    public struct ParseError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Parses metrics.jsonl text; `source` names the file in errors.
    public static func parseMetrics(_ text: String, source: String) throws -> [Line] {
        var out: [Line] = []
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty { continue }
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw ParseError(description: "\(source):\(i + 1): not a JSON object (metrics.jsonl has one per line)")
            }
            guard let step = (object["step"] as? NSNumber)?.intValue else {
                throw ParseError(description: "\(source):\(i + 1): no \"step\"")
            }
            let number = { (key: String) -> Double? in (object[key] as? NSNumber)?.doubleValue.nonNaN }
            out.append(Line(step: step, wallSeconds: number("wall_seconds"), loss: number("loss"), validWer: number("valid_wer"),
                            validWerChannel: number("valid_wer_channel"), sparsity: number("sparsity"),
                            validWerSeen: number("valid_wer_seen")))
        }
        return out
    }

    /// Loss and validation WER against step and against wall time, with goal lines.
    public static func run(_ lines: [Line], title: String, goalWer: Double?, totalSteps: Int?) -> Figure {
        let maxWall = lines.compactMap(\.wallSeconds).max() ?? 0
        let (unit, divisor) = maxWall >= 2 * 3600 ? ("h", 3600.0) : maxWall >= 180 ? ("min", 60.0) : ("s", 1.0)
        func curve(_ name: String, _ color: String, x: (Line) -> Double?, y: (Line) -> Double?, dots: Bool = false) -> Figure.Series {
            Figure.Series(name: name, color: color, points: lines.compactMap { l in
                guard let xv = x(l), let yv = y(l) else { return nil }
                return Figure.Point(xv, yv)
            }, dots: dots)
        }
        let byStep = { (l: Line) -> Double? in Double(l.step) }
        let byWall = { (l: Line) -> Double? in l.wallSeconds.map { $0 / divisor } }
        let werGoals = goalWer.map { [Figure.Goal(.y, $0, String(format: "goal %.1f%%", 100 * $0))] } ?? []
        let stepGoals = totalSteps.map { [Figure.Goal(.x, Double($0), "\($0) steps")] } ?? []
        var lossStep = Figure.Panel(title: "Training loss", xLabel: "step", yLabel: "loss (per example)",
                                    series: [curve("loss", "#1f77b4", x: byStep, y: \.loss)])
        lossStep.goals = stepGoals
        let lossWall = Figure.Panel(title: "Training loss", xLabel: "wall time (\(unit))", yLabel: "loss (per example)",
                                    series: [curve("loss", "#1f77b4", x: byWall, y: \.loss)])
        // valid_seen (training voices) beside valid (held-out voices), when the run scored it.
        let seen = lines.contains { $0.validWerSeen != nil }
        func werSeries(_ x: @escaping (Line) -> Double?) -> [Figure.Series] {
            [curve("valid", "#1f77b4", x: x, y: \.validWer, dots: true),
             curve("valid_channel", "#d62728", x: x, y: \.validWerChannel, dots: true)]
                + (seen ? [curve("valid_seen (training voices)", "#2ca02c", x: x, y: \.validWerSeen, dots: true)] : [])
        }
        var werStep = Figure.Panel(title: "Validation WER", xLabel: "step", yLabel: "word error rate", series: werSeries(byStep))
        werStep.goals = werGoals + stepGoals
        werStep.yFormat = .percent
        var werWall = Figure.Panel(title: "Validation WER", xLabel: "wall time (\(unit))", yLabel: "word error rate", series: werSeries(byWall))
        werWall.goals = werGoals
        werWall.yFormat = .percent
        // Every panel starts at 0; the step panels end at the run's total, the wall-time ones at
        // its last line, so that panels one above the other share their x axis.
        let lastStep = Double(max(totalSteps ?? 0, lines.map(\.step).max() ?? 1))
        var panels = [lossStep, lossWall, werStep, werWall]
        for i in panels.indices {
            panels[i].xRange = i % 2 == 0 ? 0 ... lastStep : 0 ... max(maxWall / divisor, 1e-9)
        }
        return Figure(title: title, panels: panels)
    }

    /// One sweep result: a method at a sparsity, with WER on two test sets and their intervals.
    public struct SweepPoint: Sendable {
        public var method: String
        public var sparsity: Double
        public var wer: Double
        public var werInterval: ClosedRange<Double>?
        public var werChannel: Double
        public var werChannelInterval: ClosedRange<Double>?
        public init(method: String, sparsity: Double, wer: Double, werInterval: ClosedRange<Double>?, werChannel: Double,
                    werChannelInterval: ClosedRange<Double>?) {
            self.method = method
            self.sparsity = sparsity
            self.wer = wer
            self.werInterval = werInterval
            self.werChannel = werChannel
            self.werChannelInterval = werChannelInterval
        }
    }

    public static let methodColors = ["csp": "#d62728", "admm-magnitude": "#ff7f0e", "gradual-magnitude": "#1f77b4",
                                      "one-shot-magnitude": "#17becf", "taylor": "#2ca02c", "structured": "#9467bd",
                                      "low-rank": "#8c564b"]

    /// WER against achieved sparsity, one line per method (in `order`), clean and channel side
    /// by side; the dense model is a dashed line; intervals are error bars.
    public static func sweep(_ points: [SweepPoint], order: [String], title: String) -> Figure {
        var panels: [Figure.Panel] = []
        for (name, value, interval) in [("clean test set", \SweepPoint.wer, \SweepPoint.werInterval),
                                        ("channel-degraded test set", \SweepPoint.werChannel, \SweepPoint.werChannelInterval)] {
            var series: [Figure.Series] = []
            let pruned = points.filter { $0.method != "dense" }
            let xs = pruned.map(\.sparsity)
            let xRange = (min(0.4, xs.min() ?? 0.4)) ... 1.0
            for method in order where method != "dense" {
                let mine = pruned.filter { $0.method == method }.sorted { $0.sparsity < $1.sparsity }
                guard !mine.isEmpty else { continue }
                series.append(Figure.Series(name: method, color: methodColors[method] ?? "#333", points: mine.map {
                    Figure.Point($0.sparsity, $0[keyPath: value], low: $0[keyPath: interval]?.lowerBound, high: $0[keyPath: interval]?.upperBound)
                }, dots: true, width: method == "csp" ? 2.5 : 1.5))
            }
            var panel = Figure.Panel(title: "WER, \(name)", xLabel: "sparsity of the pruned layers (stored parameters)",
                                     yLabel: "word error rate", series: series)
            if let dense = points.first(where: { $0.method == "dense" }) {
                panel.goals = [Figure.Goal(.y, dense[keyPath: value], String(format: "dense %.1f%%", 100 * dense[keyPath: value]))]
            }
            panel.xRange = xRange
            panel.xFormat = .percent
            panel.yFormat = .percent
            panels.append(panel)
        }
        var figure = Figure(title: title, panels: panels)
        if points.contains(where: { $0.werInterval != nil }) { figure.note = "bars: 95% bootstrap intervals over test utterances" }
        return figure
    }
}

extension Double {
    var nonNaN: Double? { isFinite ? self : nil }
}
