import Foundation

/// One line of results.json: a method at a target, scored on the test sets.
public struct PruningResult: Codable, Sendable, Equatable {
    public var method: String
    /// The requested sparsity (0 for the dense reference).
    public var targetSparsity: Double
    public var run: String
    /// Test set, clean: word and character error rates.
    public var wer: Double
    public var cer: Double
    /// Test set, channel-degraded.
    public var werChannel: Double
    public var cerChannel: Double
    /// Validation WER at the end of the run (what tuning would look at), when measured.
    public var validWer: Double?
    public var validWerChannel: Double?
    /// Achieved sparsity of the pruned layers (stored parameters for low-rank), of all
    /// parameters, and per tensor.
    public var sparsity: Double
    public var sparsityOverall: Double
    public var layerSparsity: [String: Double]
    /// Stored non-zero parameters of the whole model (low-rank: the factors' entries).
    public var params: Int
    public var paramsDense: Int
    /// Bytes of the model in the sparse broadcast encoding (low-rank: fp32 factors).
    public var encodedBytes: Int
    /// Training wall time of the run; the coordinator's share spent in the projection step.
    public var wallSeconds: Double
    public var projectionSeconds: Double
    public var evalSeconds: Double
    public var testUtterances: Int
    /// csp only: WER(csp) − WER(baseline) on the clean and channel test sets, paired bootstrap.
    public var deltaWerVsGradual: Comparison?
    public var deltaWerVsAdmm: Comparison?
    /// This run's test WER with a 95% bootstrap interval over utterances (clean, channel);
    /// absent in results written before it was stored.
    public var werInterval: BootstrapInterval?
    public var werChannelInterval: BootstrapInterval?
    /// False for runs that do not stand for their method in the table: the tuning setting not
    /// chosen, and the repeats with extra seeds (nil: the only run).
    public var primary: Bool? = nil
    /// "a" or "b": the tuning setting, for methods with tuning settings.
    public var setting: String? = nil
    /// An extra seed's repeat.
    public var seed: Int? = nil
    /// Methods that run csp: WER(this) − WER(baseline) against every baseline at the target, by name.
    public var comparisons: [String: Comparison]? = nil
    /// A snapshot kept on the way by the method's one run to every size (`snapshots`); its
    /// wall time is that whole run's.
    public var snapshot: Bool? = nil

    public var isPrimary: Bool { primary ?? true }

    public struct Comparison: Codable, Sendable, Equatable {
        public var clean: PairedDifference
        public var channel: PairedDifference
        public init(clean: PairedDifference, channel: PairedDifference) {
            self.clean = clean
            self.channel = channel
        }
    }
}

extension PruningResult {
    /// A record with its identity set and every measurement zero, to be filled in.
    public init(method: String, targetSparsity: Double, run: String) {
        self.init(method: method, targetSparsity: targetSparsity, run: run, wer: 0, cer: 0, werChannel: 0, cerChannel: 0,
                  validWer: nil, validWerChannel: nil, sparsity: 0, sparsityOverall: 0, layerSparsity: [:], params: 0,
                  paramsDense: 0, encodedBytes: 0, wallSeconds: 0, projectionSeconds: 0, evalSeconds: 0, testUtterances: 0)
    }
}

/// Writes results.md from the records (`csptrain plot` draws wer-vs-sparsity.svg).
public enum PruningReport {
    public static let methodOrder = ["dense"] + PruningExperimentPlan.knownMethods

    /// Methods in the order they first appear (dense first).
    static func order(_ results: [PruningResult]) -> [String] {
        var seen: [String] = ["dense"]
        for r in results where !seen.contains(r.method) { seen.append(r.method) }
        return seen
    }

    static func pct(_ x: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", 100 * x) }
    static func signed(_ x: Double) -> String { String(format: "%+.2f", 100 * x) }

    public static func markdown(_ all: [PruningResult], settings: PruningExperimentSettings, denseCheckpoint: String,
                                computeSeconds: Double, missing: [String]) -> String {
        let results = all.filter(\.isPrimary)
        let dense = results.first { $0.method == "dense" }
        var md = "# Pruning comparison\n\n"
        md += "Every method starts from the same dense checkpoint (`\(denseCheckpoint)`) and trains \(settings.steps) steps "
        md += "on \(settings.workers) workers; gradual and dual methods ramp to the target over steps 0–\(settings.ramp.end) "
        md += "(mask or support updated every \(settings.ramp.interval) steps), one-shot prunes at step 0, and all fine-tune with the "
        md += "mask fixed after that. Scores: greedy CTC decoding, no language model, on the test split (held-out sentences and "
        md += "speaker styles, \(results.first?.testUtterances ?? 0) utterances clean and the same through the simulated channel). "
        md += "WER columns are percentages; Δ is against the dense model in points. Hyperparameter tuning: \(settings.tuning).\n\n"
        md += "Total compute of the pruning runs (training and scoring, dense reference excluded): "
        md += String(format: "%.1f min.\n\n", computeSeconds / 60)
        if !missing.isEmpty { md += "**Not finished yet:** \(missing.joined(separator: ", ")).\n\n" }
        if let dense {
            md += "Dense reference: WER \(pct(dense.wer)) clean, \(pct(dense.werChannel)) channel; \(dense.params) parameters, "
            md += "\(dense.encodedBytes / 1024) KiB.\n\n"
        }
        let targets = Array(Set(results.filter { $0.method != "dense" }.map(\.targetSparsity))).sorted()
        md += "| target | method | WER | Δ | WER channel | Δ | CER | sparsity | params | KiB | train s |\n"
        md += "|---|---|---|---|---|---|---|---|---|---|---|\n"
        for t in targets {
            for m in order(results) {
                guard let r = results.first(where: { $0.method == m && $0.targetSparsity == t }) else { continue }
                let dClean = dense.map { signed(r.wer - $0.wer) } ?? "–", dChannel = dense.map { signed(r.werChannel - $0.werChannel) } ?? "–"
                md += "| \(pct(t, 0))% | \(m) | \(pct(r.wer, 2)) | \(dClean) | \(pct(r.werChannel, 2)) | \(dChannel) | \(pct(r.cer, 2)) | "
                md += "\(pct(r.sparsity)) | \(r.params) | \(r.encodedBytes / 1024) | \(Int(r.wallSeconds.rounded())) |\n"
            }
        }
        md += tuningSection(all, settings: settings) + seedSection(all)
        md += "\n## CSP against its baselines\n\n"
        md += "WER(csp) − WER(baseline) in points, 95% paired-bootstrap interval over test utterances "
        md += "(\(settings.bootstrapSamples) resamples); negative means CSP makes fewer errors.\n\n"
        md += "| target | vs gradual-magnitude (clean) | (channel) | vs admm-magnitude (clean) | (channel) |\n|---|---|---|---|---|\n"
        func cell(_ d: PairedDifference?) -> String {
            guard let d else { return "–" }
            return "\(signed(d.delta)) [\(signed(d.ciLow)), \(signed(d.ciHigh))] \(d.verdict.rawValue)"
        }
        var verdicts: [(Double, String, PairedDifference.Verdict)] = []
        for t in targets {
            guard let c = results.first(where: { $0.method == "csp" && $0.targetSparsity == t }) else { continue }
            md += "| \(pct(t, 0))% | \(cell(c.deltaWerVsGradual?.clean)) | \(cell(c.deltaWerVsGradual?.channel)) | "
            md += "\(cell(c.deltaWerVsAdmm?.clean)) | \(cell(c.deltaWerVsAdmm?.channel)) |\n"
            if let g = c.deltaWerVsGradual { verdicts.append((t, "gradual-magnitude", g.clean.verdict)) }
            if let a = c.deltaWerVsAdmm { verdicts.append((t, "admm-magnitude", a.clean.verdict)) }
        }
        md += "\n" + summaryParagraph(verdicts) + "\n"
        md += comparisonSection(results, settings: settings)
        md += snapshotSection(all, settings: settings)
        return md
    }

    /// "One run, every size": each snapshot against the run trained for its size alone, and the
    /// training time of the one run against the runs per size.
    static func snapshotSection(_ all: [PruningResult], settings: PruningExperimentSettings) -> String {
        let snapshots = all.filter { $0.snapshot == true }
        guard !snapshots.isEmpty else { return "" }
        var md = "\n## One run, every size\n\n"
        md += "Per method, one run ramps to \(pct(settings.snapshots.last ?? 0, 0))% and holds each of "
        md += "\(settings.snapshots.map { pct($0, 0) + "%" }.joined(separator: ", ")) for \(settings.snapshotSteps) steps with its mask fixed "
        md += "(\(PruningExperimentPlan.snapshotRunSteps(settings)) steps in all), keeping a checkpoint at the end of each hold; "
        md += "the runs per size train \(settings.steps) steps each. Test WER in percent, snapshot against the run for that size "
        md += "(Δ in points; negative: the snapshot makes fewer errors). Training time: the one run against the runs per size it replaces.\n\n"
        md += "| method | size | WER run | WER snapshot | Δ | WER channel run | snapshot | Δ |\n|---|---|---|---|---|---|---|---|\n"
        var times: [(String, Double, Double, Int)] = []
        for m in order(snapshots) where m != "dense" {
            let mine = snapshots.filter { $0.method == m }.sorted { $0.targetSparsity < $1.targetSparsity }
            var perSize = 0.0, found = 0
            for r in mine {
                let own = all.first { $0.method == m && $0.targetSparsity == r.targetSparsity && $0.isPrimary && $0.snapshot != true }
                if let own { perSize += own.wallSeconds; found += 1 }
                md += "| \(m) | \(pct(r.targetSparsity, 0))% | \(own.map { pct($0.wer, 2) } ?? "–") | \(pct(r.wer, 2)) | "
                md += "\(own.map { signed(r.wer - $0.wer) } ?? "–") | \(own.map { pct($0.werChannel, 2) } ?? "–") | \(pct(r.werChannel, 2)) | "
                md += "\(own.map { signed(r.werChannel - $0.werChannel) } ?? "–") |\n"
            }
            if let first = mine.first { times.append((m, first.wallSeconds, perSize, found)) }
        }
        md += "\n| method | one run, s | runs per size, s (sizes found) |\n|---|---|---|\n"
        for (m, one, per, n) in times { md += "| \(m) | \(Int(one.rounded())) | \(Int(per.rounded())) (\(n)) |\n" }
        return md
    }

    /// Both tuning settings of every tuned method at the tuning target, by validation WER.
    static func tuningSection(_ all: [PruningResult], settings: PruningExperimentSettings) -> String {
        let tuned = all.filter { $0.setting != nil && $0.seed == nil && $0.targetSparsity == settings.tuningTarget }
        guard !tuned.isEmpty else { return "" }
        var md = "\n## Tuning at \(pct(settings.tuningTarget, 0))%\n\n"
        md += "Two settings per method, fixed before the sweep; the lower clean validation WER is used at every target.\n\n"
        md += "| method | setting | overrides | valid WER | valid WER channel | chosen |\n|---|---|---|---|---|---|\n"
        for r in tuned.sorted(by: { ($0.method, $0.setting!) < ($1.method, $1.setting!) }) {
            let index = r.setting == "a" ? 0 : 1
            let overrides = settings.tuningSettings[r.method].map { $0[index].joined(separator: ", ") } ?? ""
            md += "| \(r.method) | \(r.setting!) | \(overrides) | \(r.validWer.map { pct($0, 2) } ?? "–") | "
            md += "\(r.validWerChannel.map { pct($0, 2) } ?? "–") | \(r.isPrimary ? "yes" : "") |\n"
        }
        return md
    }

    /// Test WER of every seed of the methods run more than once, with their spread.
    static func seedSection(_ all: [PruningResult]) -> String {
        let repeated = Set(all.filter { $0.seed != nil }.map { "\($0.method)@\($0.targetSparsity)" })
        guard !repeated.isEmpty else { return "" }
        var md = "\n## Seeds\n\nTest WER (clean / channel) of each seed; spread = max − min in points.\n\n"
        md += "| target | method | seeds | WER clean | WER channel | spread clean | spread channel |\n|---|---|---|---|---|---|---|\n"
        for key in repeated.sorted() {
            let runs = all.filter { "\($0.method)@\($0.targetSparsity)" == key && ($0.isPrimary || $0.seed != nil) }
                .sorted { ($0.seed ?? 0) < ($1.seed ?? 0) }
            guard let first = runs.first else { continue }
            let clean = runs.map(\.wer), channel = runs.map(\.werChannel)
            md += "| \(pct(first.targetSparsity, 0))% | \(first.method) | \(runs.map { $0.seed.map(String.init) ?? "base" }.joined(separator: ", ")) | "
            md += "\(clean.map { pct($0, 2) }.joined(separator: ", ")) | \(channel.map { pct($0, 2) }.joined(separator: ", ")) | "
            md += "\(pct(clean.max()! - clean.min()!, 2)) | \(pct(channel.max()! - channel.min()!, 2)) |\n"
        }
        return md
    }

    /// Every CSP method against every baseline, paired bootstrap.
    static func comparisonSection(_ results: [PruningResult], settings: PruningExperimentSettings) -> String {
        let rows = results.filter { $0.comparisons?.isEmpty == false }
        guard !rows.isEmpty else { return "" }
        var md = "\n## Every CSP method against every baseline\n\n"
        md += "WER(CSP method) − WER(baseline) in points, 95% paired-bootstrap interval; negative: CSP makes fewer errors.\n\n"
        md += "| target | CSP method | baseline | clean | channel |\n|---|---|---|---|---|\n"
        for r in rows.sorted(by: { ($0.targetSparsity, $0.method) < ($1.targetSparsity, $1.method) }) {
            for (baseline, c) in r.comparisons!.sorted(by: { $0.key < $1.key }) {
                md += "| \(pct(r.targetSparsity, 0))% | \(r.method) | \(baseline) | "
                md += "\(signed(c.clean.delta)) [\(signed(c.clean.ciLow)), \(signed(c.clean.ciHigh))] \(c.clean.verdict.rawValue) | "
                md += "\(signed(c.channel.delta)) [\(signed(c.channel.ciLow)), \(signed(c.channel.ciHigh))] \(c.channel.verdict.rawValue) |\n"
            }
        }
        return md
    }

    /// Where CSP wins, ties and loses on the clean test set, from the intervals alone.
    static func summaryParagraph(_ verdicts: [(Double, String, PairedDifference.Verdict)]) -> String {
        guard !verdicts.isEmpty else { return "No CSP run has finished yet." }
        var parts: [String] = []
        for v in [PairedDifference.Verdict.wins, .ties, .loses] {
            let hits = verdicts.filter { $0.2 == v }
            guard !hits.isEmpty else { continue }
            let phrase = hits.map { "against \($0.1) at \(pct($0.0, 0))%" }.joined(separator: ", ")
            parts.append("CSP \(v.rawValue) \(phrase)")
        }
        return "On the clean test set (a win or a loss is an interval that excludes zero): " + parts.joined(separator: "; ") + "."
    }

    /// WER against achieved sparsity, one line per method, clean and channel side by side.
    public static func svg(_ all: [PruningResult]) -> String {
        let results = all.filter(\.isPrimary)
        let methodOrder = order(results)
        let colors = ["csp": "#d62728", "admm-magnitude": "#ff7f0e", "gradual-magnitude": "#1f77b4", "one-shot-magnitude": "#17becf",
                      "taylor": "#2ca02c", "structured": "#9467bd", "low-rank": "#8c564b", "wanda": "#bcbd22",
                      "one-shot-reconstruction": "#7f7f7f", "csp-activations": "#e377c2"]
        let panelW = 360.0, panelH = 260.0, left = 55.0, top = 30.0, gap = 70.0
        let width = left + 2 * panelW + gap + 170, height = top + panelH + 55
        let pruned = results.filter { $0.method != "dense" }
        let maxWER = max(0.05, (results.map { max($0.wer, $0.werChannel) }.max() ?? 0.1) * 1.08)
        let xMin = 0.4, xMax = 1.0
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        for (p, (title, value)) in [("clean test set", \PruningResult.wer), ("channel-degraded test set", \PruningResult.werChannel)].enumerated() {
            let x0 = left + Double(p) * (panelW + gap)
            func x(_ v: Double) -> Double { x0 + (v - xMin) / (xMax - xMin) * panelW }
            func y(_ v: Double) -> Double { top + panelH - v / maxWER * panelH }
            s += "<text x=\"\(x0 + panelW / 2)\" y=\"18\" text-anchor=\"middle\" font-weight=\"bold\">WER, \(title)</text>\n"
            s += "<rect x=\"\(x0)\" y=\"\(top)\" width=\"\(panelW)\" height=\"\(panelH)\" fill=\"none\" stroke=\"#444\"/>\n"
            for tick in stride(from: xMin, through: xMax + 1e-9, by: 0.1) {
                s += "<line x1=\"\(x(tick))\" y1=\"\(top + panelH)\" x2=\"\(x(tick))\" y2=\"\(top + panelH + 4)\" stroke=\"#444\"/>"
                s += "<text x=\"\(x(tick))\" y=\"\(top + panelH + 17)\" text-anchor=\"middle\">\(Int((tick * 100).rounded()))%</text>\n"
            }
            let step = maxWER > 0.3 ? 0.1 : maxWER > 0.12 ? 0.05 : 0.02
            for tick in stride(from: 0.0, through: maxWER, by: step) {
                s += "<line x1=\"\(x0)\" y1=\"\(y(tick))\" x2=\"\(x0 + panelW)\" y2=\"\(y(tick))\" stroke=\"#ddd\"/>"
                s += "<text x=\"\(x0 - 5)\" y=\"\(y(tick) + 4)\" text-anchor=\"end\">\(Int((tick * 100).rounded()))%</text>\n"
            }
            s += "<text x=\"\(x0 + panelW / 2)\" y=\"\(top + panelH + 35)\" text-anchor=\"middle\">sparsity of the pruned layers (stored parameters)</text>\n"
            if let dense = results.first(where: { $0.method == "dense" }) {
                let yd = y(dense[keyPath: value])
                s += "<line x1=\"\(x0)\" y1=\"\(yd)\" x2=\"\(x0 + panelW)\" y2=\"\(yd)\" stroke=\"black\" stroke-dasharray=\"5,4\"/>\n"
            }
            for m in methodOrder where m != "dense" {
                let points = pruned.filter { $0.method == m }.sorted { $0.sparsity < $1.sparsity }
                guard !points.isEmpty else { continue }
                let color = colors[m] ?? "#333"
                let path = points.map { String(format: "%.1f,%.1f", x($0.sparsity), y($0[keyPath: value])) }.joined(separator: " ")
                s += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"\(m == "csp" ? 2.5 : 1.5)\"/>\n"
                for q in points { s += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%@\"/>", x(q.sparsity), y(q[keyPath: value]), color) }
                s += "\n"
            }
        }
        let lx = left + 2 * panelW + gap + 15
        for (i, m) in methodOrder.enumerated() {
            let ly = top + 10 + Double(i) * 20
            if m == "dense" {
                s += "<line x1=\"\(lx)\" y1=\"\(ly)\" x2=\"\(lx + 22)\" y2=\"\(ly)\" stroke=\"black\" stroke-dasharray=\"5,4\"/>"
            } else {
                s += "<line x1=\"\(lx)\" y1=\"\(ly)\" x2=\"\(lx + 22)\" y2=\"\(ly)\" stroke=\"\(colors[m] ?? "#333")\" stroke-width=\"2\"/>"
            }
            s += "<text x=\"\(lx + 28)\" y=\"\(ly + 4)\">\(m)</text>\n"
        }
        s += "</svg>\n"
        return s
    }

    public static func json(_ results: [PruningResult]) throws -> Data {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(results)
    }
}
