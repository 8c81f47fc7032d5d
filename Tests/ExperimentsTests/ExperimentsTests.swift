import Foundation
import Testing
@testable import Experiments

struct BootstrapTests {
    /// Two systems on n utterances of 10 words each.
    func scores(_ edits: [Int]) -> UtteranceScores {
        UtteranceScores(wordEdits: edits, words: Array(repeating: 10, count: edits.count),
                        characterEdits: edits, characters: Array(repeating: 50, count: edits.count))
    }

    @Test func identicalSystemsHaveADegenerateIntervalAtZero() {
        let a = scores((0 ..< 200).map { $0 % 4 })
        let d = PairedDifference(a, a, samples: 500)
        #expect(d.delta == 0 && d.ciLow == 0 && d.ciHigh == 0)
        #expect(d.verdict == .ties)
    }

    @Test func aConstantPerUtteranceGapIsExact() {
        // b makes one more error on every utterance: the difference is −0.1 on every resample.
        let edits = (0 ..< 100).map { $0 % 3 }
        let d = PairedDifference(scores(edits), scores(edits.map { $0 + 1 }), samples: 500)
        #expect(abs(d.delta + 0.1) < 1e-12 && abs(d.ciLow + 0.1) < 1e-12 && abs(d.ciHigh + 0.1) < 1e-12)
        #expect(d.verdict == .wins)
    }

    @Test func intervalsCoverTheEstimateAndNarrowWithMoreUtterances() {
        // a is better on a random half of the utterances, worse on a few: a noisy, real gap.
        func pair(_ n: Int) -> (UtteranceScores, UtteranceScores) {
            var a: [Int] = [], b: [Int] = []
            for i in 0 ..< n {
                let h = (i &* 2_654_435_761) % 7
                a.append(h < 3 ? 0 : 1)
                b.append(h < 5 ? 1 : 0)
            }
            return (scores(a), scores(b))
        }
        let (a1, b1) = pair(100), (a2, b2) = pair(1600)
        let small = PairedDifference(a1, b1, samples: 1000), large = PairedDifference(a2, b2, samples: 1000)
        #expect(small.ciLow <= small.delta && small.delta <= small.ciHigh)
        #expect(large.ciLow <= large.delta && large.delta <= large.ciHigh)
        // The standard error shrinks as 1/√n: 16× the utterances, about a quarter of the width.
        let ratio = (large.ciHigh - large.ciLow) / (small.ciHigh - small.ciLow)
        #expect(ratio > 0.15 && ratio < 0.4, "width ratio \(ratio)")
        // Swapping the systems mirrors the interval.
        let swapped = PairedDifference(b1, a1, samples: 1000)
        #expect(abs(swapped.delta + small.delta) < 1e-12)
    }

    @Test func percentilesInterpolateLikeNumpy() {
        // numpy.percentile([1, 2, 3, 4, 10], [2.5, 50, 97.5]) = [1.1, 3.0, 9.4]
        let v = [1.0, 2, 3, 4, 10]
        #expect(abs(PairedDifference.percentile(v, 0.025) - 1.1) < 1e-12)
        #expect(abs(PairedDifference.percentile(v, 0.5) - 3.0) < 1e-12)
        #expect(abs(PairedDifference.percentile(v, 0.975) - 9.4) < 1e-12)
    }
}

struct PlanTests {
    @Test func settingsParseWithDefaultsAndNameTheBadKey() throws {
        let s = try PruningExperimentSettings.parse(yaml: "base: Configs/prune-speech.yaml\nsteps: 400\ntargets: [0.8, 0.9]\n", source: "x.yaml")
        #expect(s.steps == 400 && s.targets == [0.8, 0.9] && s.methods.count == 7)
        // Two thirds of 400 is 266; a sixth of that is 44; the ramp ends on a multiple of it.
        #expect(s.ramp.end == 264 && s.ramp.interval == 44)
        #expect(throws: ExperimentError("x.yaml: unknown key stepz (known: base, bootstrap_samples, dense_checkpoint, dense_config, extra_seeds, interval, method_set, methods, ramp_end_step, seeded, set, snapshot_steps, snapshots, steps, structured_group, targets, test, test_channel, tuning, tuning_settings, tuning_target, variants, workers)")) {
            try PruningExperimentSettings.parse(yaml: "base: b.yaml\nstepz: 3\n", source: "x.yaml")
        }
        #expect(throws: ExperimentError("x.yaml: methods: unknown method magic (known: admm-magnitude, csp, gradual-magnitude, low-rank, one-shot-magnitude, one-shot-reconstruction, structured, taylor, wanda; name others under variants)")) {
            try PruningExperimentSettings.parse(yaml: "base: b.yaml\nmethods: [csp, magic]\n", source: "x.yaml")
        }
        #expect(throws: ExperimentError("x.yaml: targets [0.7, 0.701] name the same whole percentage twice (runs are named by it, e.g. csp-70)")) {
            try PruningExperimentSettings.parse(yaml: "base: b.yaml\ntargets: [0.7, 0.701]\n", source: "x.yaml")
        }
        #expect(throws: ExperimentError("x.yaml: targets: 1.5 is not a sparsity fraction in (0, 1)")) {
            try PruningExperimentSettings.parse(yaml: "base: b.yaml\ntargets: [0.5, 1.5]\n", source: "x.yaml")
        }
    }

    @Test func everyMethodAtEveryTargetFromTheSameCheckpoint() throws {
        var s = try PruningExperimentSettings.parse(yaml: "base: b.yaml\nsteps: 300\ntargets: [0.7, 0.9]\n", source: "x.yaml")
        s.methodOverrides["csp"] = ["pruning.iterations=10"]
        let runs = PruningExperimentPlan.runs(s, denseCheckpoint: "/d.ckpt")
        #expect(runs.count == 14)
        #expect(runs.map(\.name).prefix(7) == ["csp-70", "admm-magnitude-70", "gradual-magnitude-70", "one-shot-magnitude-70", "taylor-70", "structured-70", "low-rank-70"])
        #expect(runs.allSatisfy { $0.overrides.contains("init_from=/d.ckpt") && $0.overrides.contains("steps=300") })
        #expect(runs[0].overrides.last == "pruning.iterations=10" && !runs[1].overrides.contains("pruning.iterations=10"))
        // structured: N:M with M = 10 and N from the target.
        let structured = runs.filter { $0.method == "structured" }
        #expect(structured[0].overrides.contains("pruning.structured_keep=3") && structured[1].overrides.contains("pruning.structured_keep=1"))
    }
}

struct ReportTests {
    func result(_ method: String, _ target: Double, wer: Double) -> PruningResult {
        PruningResult(method: method, targetSparsity: target, run: "\(method)", wer: wer, cer: wer / 3, werChannel: wer * 2,
                      cerChannel: wer, validWer: nil, validWerChannel: nil, sparsity: target, sparsityOverall: target * 0.9,
                      layerSparsity: [:], params: 100, paramsDense: 1000, encodedBytes: 4096, wallSeconds: 60,
                      projectionSeconds: 1, evalSeconds: 5, testUtterances: 10)
    }

    @Test func jsonHasTheIssueFieldNamesAndTheReportStatesVerdicts() throws {
        var csp = result("csp", 0.8, wer: 0.1)
        let a = UtteranceScores(wordEdits: [0, 1, 0, 0], words: [5, 5, 5, 5]), b = UtteranceScores(wordEdits: [1, 2, 1, 1], words: [5, 5, 5, 5])
        csp.deltaWerVsGradual = .init(clean: PairedDifference(a, b, samples: 200), channel: PairedDifference(a, a, samples: 200))
        let results = [result("dense", 0, wer: 0.05), csp, result("gradual-magnitude", 0.8, wer: 0.12)]
        let object = try JSONSerialization.jsonObject(with: PruningReport.json(results)) as! [[String: Any]]
        for key in ["method", "target_sparsity", "wer", "cer", "wer_channel", "sparsity", "sparsity_overall", "layer_sparsity", "params",
                    "encoded_bytes", "wall_seconds"] {
            #expect(object.allSatisfy { $0[key] != nil }, "missing \(key)")
        }
        let delta = object[1]["delta_wer_vs_gradual"] as! [String: Any]
        #expect((delta["clean"] as! [String: Any])["ci_low"] != nil)
        var settings = PruningExperimentSettings()
        settings.steps = 400
        let md = PruningReport.markdown(results, settings: settings, denseCheckpoint: "d.ckpt", computeSeconds: 600, missing: ["taylor-80"])
        #expect(md.contains("CSP wins against gradual-magnitude at 80%"))
        #expect(md.contains("| 80% | csp | 10.00 | +5.00 |"))
        #expect(md.contains("Not finished yet:** taylor-80"))
    }
}
