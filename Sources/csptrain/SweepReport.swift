import Checkpoints
import Configuration
import Experiments
import Foundation
import Pruning
import Runtime
import Tasks
import Tensors
import Wire

/// The sweep's plan and report: which runs are due (the pure plan, fed with the validation WERs
/// of finished runs) and results.json / results.md / wer-vs-sparsity.svg from every scored run.
extension Sweep {
    /// The runs due now, planned with the validation WERs of the runs already finished.
    func plan(dense: URL) -> [PlannedRun] {
        var validation: [String: Double] = [:]
        var plan = PruningExperimentPlan.runs(settings, denseCheckpoint: dense.path)
        // Each round can only add runs whose dependencies finished; a few rounds settle it.
        for _ in 0 ..< 4 {
            validation = validationWERs(plan)
            let next = PruningExperimentPlan.runs(settings, denseCheckpoint: dense.path, validation: validation)
            if next == plan { break }
            plan = next
        }
        return plan
    }

    /// Clean validation WER at the end of every completed run of `plan`.
    func validationWERs(_ plan: [PlannedRun]) -> [String: Double] {
        var out: [String: Double] = [:]
        for run in plan {
            if let summary = try? readSummary(folder(run.name)), summary.status == .completed, let w = summary.validWer { out[run.name] = w }
        }
        return out
    }

    /// Rewrites results.json, results.md and the plot from every scored run.
    func writeReport(plan: [PlannedRun], dense: URL) throws {
        var results: [PruningResult] = []
        var missing: [String] = []
        var computeSeconds = 0.0
        let denseScores = readScores(runsFolder.appendingPathComponent("dense/test-scores.json"))
        if let denseScores, var r = try? record(method: "dense", target: 0, name: "dense", checkpoint: dense, scores: denseScores, summary: nil) {
            r.setIntervals(denseScores, samples: settings.bootstrapSamples)
            results.append(r)
        }
        var scoresByRun: [String: Scores] = [:]
        let validation = validationWERs(plan)
        for run in plan {
            guard let scores = readScores(scoresFile(run.name)), let summary = try? readSummary(folder(run.name)),
                  var r = try? record(method: run.method, target: run.target, name: run.name,
                                      checkpoint: URL(fileURLWithPath: scores.checkpoint), scores: scores, summary: summary) else {
                missing.append(run.name)
                continue
            }
            r.setting = run.setting.map { ["a", "b"][$0] }
            r.seed = run.seed
            if run.setting != nil || run.seed != nil {
                r.primary = run.seed == nil
                    && PruningExperimentPlan.primaryRunName(settings, run.method, target: run.target, validation: validation) == run.name
            }
            if run.snapshots != nil { r.primary = false }
            scoresByRun[run.name] = scores
            r.setIntervals(scores, samples: settings.bootstrapSamples)
            computeSeconds += r.wallSeconds + r.evalSeconds
            results.append(r)
            // The sizes the one run kept on its way.
            let store = CheckpointStore(runDirectory: folder(run.name))
            for size in run.snapshots ?? [] {
                guard let s = readScores(snapshotScoresFile(run.name, size)),
                      var k = try? record(method: run.method, target: size, name: run.name, checkpoint: store.snapshotPath(sparsity: size),
                                          scores: s, summary: summary) else { continue }
                k.snapshot = true
                k.primary = false
                k.setting = r.setting
                k.setIntervals(s, samples: settings.bootstrapSamples)
                computeSeconds += k.evalSeconds
                results.append(k)
            }
        }
        // Every CSP method against every baseline, utterance by utterance (primary runs only).
        let primary = Dictionary(results.filter { $0.isPrimary && $0.method != "dense" }.map { ("\($0.method)@\($0.targetSparsity)", $0.run) },
                                 uniquingKeysWith: { a, _ in a })
        for i in results.indices where results[i].isPrimary && results[i].method != "dense" && settings.method(of: results[i].method) == "csp" {
            let t = results[i].targetSparsity
            guard let csp = scoresByRun[results[i].run] else { continue }
            func compare(_ baseline: String) -> PruningResult.Comparison? {
                guard let name = primary["\(baseline)@\(t)"], let b = scoresByRun[name],
                      b.clean.words == csp.clean.words, b.channel.words == csp.channel.words else { return nil }
                return .init(clean: PairedDifference(csp.clean, b.clean, samples: settings.bootstrapSamples),
                             channel: PairedDifference(csp.channel, b.channel, samples: settings.bootstrapSamples))
            }
            var all: [String: PruningResult.Comparison] = [:]
            for baseline in settings.methods where settings.method(of: baseline) != "csp" {
                if let c = compare(baseline) { all[baseline] = c }
            }
            results[i].comparisons = all
            results[i].deltaWerVsGradual = all["gradual-magnitude"]
            results[i].deltaWerVsAdmm = all["admm-magnitude"]
        }
        try PruningReport.json(results).write(to: out.appendingPathComponent("results.json"), options: .atomic)
        // Relative to the working directory where it lies under it: results.md is committed.
        let cwd = FileManager.default.currentDirectoryPath + "/"
        let densePath = dense.path.hasPrefix(cwd) ? String(dense.path.dropFirst(cwd.count)) : dense.path
        try Data(PruningReport.markdown(results, settings: settings, denseCheckpoint: densePath, computeSeconds: computeSeconds,
                                        missing: missing).utf8).write(to: out.appendingPathComponent("results.md"), options: .atomic)
        try Data(PruningReport.svg(results).utf8).write(to: out.appendingPathComponent("wer-vs-sparsity.svg"), options: .atomic)
    }

    /// A results.json record from a checkpoint, its test scores and its run's files.
    func record(method: String, target: Double, name: String, checkpoint: URL, scores: Scores, summary: RunSummary?) throws -> PruningResult {
        let ckpt = try CheckpointStore.load(checkpoint)
        let config = try RunConfiguration.parse(yaml: ckpt.configYAML, source: checkpoint.path)
        let evaluator = try EvalCommand.evaluator(ckpt, config: config, url: checkpoint)
        let layout = evaluator.network.layout, values = evaluator.parameters
        // Low-rank layers store their factors: the ranks are in the run's last support update.
        var ranks: [String: Int] = [:]
        // The last update in force at the checkpoint (pruning.jsonl counts steps from 1).
        if let text = try? String(contentsOf: RunFolder(folder(name).path).pruningFile, encoding: .utf8) {
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            let updates = text.split(separator: "\n").compactMap { try? decoder.decode(SupportUpdate.self, from: Data($0.utf8)) }
            if let update = updates.last(where: { $0.step <= ckpt.step }) {
                for layer in update.layers { if let r = layer.rank { ranks[layer.name] = r } }
            }
        }
        let pruned = Set(PrunedLayers(layout: layout, exclude: config.pruning.exclude).tensors.map(\.name))
        let wire = broadcastBytesPerTensor(values, layout: layout, half: config.coordinator.broadcastValues == .f16)
        var layerSparsity: [String: Double] = [:]
        var params = 0, prunedStored = 0, prunedTotal = 0, bytes = 0
        for (i, spec) in layout.tensors.enumerated() {
            var stored = values[spec.range].reduce(0) { $0 + ($1 != 0 ? 1 : 0) }
            var tensorBytes = wire[i]
            if let r = ranks[spec.name], spec.shape.count >= 2 {
                let m = spec.shape[0], n = spec.count / m
                stored = r * (m + n)
                tensorBytes = 4 * stored + 16
            }
            params += stored
            bytes += tensorBytes
            if pruned.contains(spec.name) {
                prunedStored += stored
                prunedTotal += spec.count
                layerSparsity[spec.name] = 1 - Double(stored) / Double(spec.count)
            }
        }
        var r = PruningResult(method: method, targetSparsity: target, run: name)
        r.wer = scores.clean.wer
        r.cer = scores.clean.cer
        r.werChannel = scores.channel.wer
        r.cerChannel = scores.channel.cer
        r.validWer = summary?.validWer
        r.validWerChannel = summary?.validWerChannel
        r.sparsity = prunedTotal == 0 ? 0 : 1 - Double(prunedStored) / Double(prunedTotal)
        r.sparsityOverall = 1 - Double(params) / Double(layout.totalCount)
        r.layerSparsity = layerSparsity
        r.params = params
        r.paramsDense = layout.totalCount
        r.encodedBytes = bytes
        r.wallSeconds = summary?.wallSeconds ?? 0
        r.projectionSeconds = summary?.projectionSeconds ?? 0
        r.evalSeconds = scores.seconds
        r.testUtterances = scores.clean.count
        return r
    }
}

extension PruningResult {
    /// The run's own WER intervals on the clean and channel test sets (for `csptrain plot`).
    mutating func setIntervals(_ scores: Sweep.Scores, samples: Int) {
        werInterval = BootstrapInterval(scores.clean, samples: samples)
        werChannelInterval = BootstrapInterval(scores.channel, samples: samples)
    }
}
