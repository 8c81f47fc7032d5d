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

    static func pct(_ x: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", 100 * x) }
    static func signed(_ x: Double) -> String { String(format: "%+.2f", 100 * x) }

    public static func markdown(_ results: [PruningResult], settings: PruningExperimentSettings, denseCheckpoint: String,
                                computeSeconds: Double, missing: [String]) -> String {
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
            for m in methodOrder {
                guard let r = results.first(where: { $0.method == m && $0.targetSparsity == t }) else { continue }
                let dClean = dense.map { signed(r.wer - $0.wer) } ?? "–", dChannel = dense.map { signed(r.werChannel - $0.werChannel) } ?? "–"
                md += "| \(pct(t, 0))% | \(m) | \(pct(r.wer, 2)) | \(dClean) | \(pct(r.werChannel, 2)) | \(dChannel) | \(pct(r.cer, 2)) | "
                md += "\(pct(r.sparsity)) | \(r.params) | \(r.encodedBytes / 1024) | \(Int(r.wallSeconds.rounded())) |\n"
            }
        }
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

    public static func json(_ results: [PruningResult]) throws -> Data {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(results)
    }
}
