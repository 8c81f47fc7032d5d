import Foundation
import Testing
@testable import Experiments

/// The sweep's plan: tuning at one target, the chosen setting elsewhere, extra seeds for CSP and
/// the best baseline, each entering once what it depends on has been validated.
struct SweepPlanTests {
    let yaml = """
    base: Configs/prune-speech.yaml
    steps: 100
    methods: [csp-activations, gradual-magnitude, taylor]
    variants:
      csp-activations: [pruning.method=csp, pruning.operator=activations]
    targets: [0.7, 0.8, 0.9]
    tuning_target: 0.8
    tuning_settings:
      csp-activations:
        - [optimizer.learning_rate=0.0003]
        - [optimizer.learning_rate=0.0001]
      taylor:
        - [pruning.taylor_decay=0.9]
        - [pruning.taylor_decay=0.99]
    extra_seeds: [2, 3]
    seeded: [csp-activations, best-baseline]
    """

    @Test func tuningComesFirstAndDecidesTheOtherTargets() throws {
        let s = try PruningExperimentSettings.parse(yaml: yaml, source: "test")
        let first = PruningExperimentPlan.runs(s, denseCheckpoint: "dense")
        #expect(first.map(\.name) == ["csp-activations-80-a", "csp-activations-80-b", "gradual-magnitude-80", "taylor-80-a", "taylor-80-b",
                                      "gradual-magnitude-70", "gradual-magnitude-90"])
        let variant = try #require(first.first)
        #expect(variant.overrides.contains("pruning.operator=activations") && variant.overrides.contains("pruning.method=csp"))
        #expect(variant.overrides.last == "optimizer.learning_rate=0.0003")
        // Validated: csp-activations prefers b, taylor a; taylor is the best baseline at 80%.
        var validation = ["csp-activations-80-a": 0.30, "csp-activations-80-b": 0.20, "gradual-magnitude-80": 0.25,
                          "taylor-80-a": 0.22, "taylor-80-b": 0.24]
        let second = PruningExperimentPlan.runs(s, denseCheckpoint: "dense", validation: validation)
        let names = second.map(\.name)
        #expect(names.contains("csp-activations-70-b") && names.contains("taylor-90-a") && !names.contains("taylor-90-b"))
        #expect(names.contains("csp-activations-80-b-s2") && names.contains("csp-activations-80-b-s3"))
        #expect(names.contains("taylor-80-a-s2") && names.contains("taylor-80-a-s3"))
        // The best baseline at 70% is not known until both baselines there are validated.
        #expect(!names.contains { $0.hasPrefix("gradual-magnitude-70-s") || $0.hasPrefix("taylor-70-a-s") })
        validation["gradual-magnitude-70"] = 0.18
        validation["taylor-70-a"] = 0.19
        let third = PruningExperimentPlan.runs(s, denseCheckpoint: "dense", validation: validation).map(\.name)
        #expect(third.contains("gradual-magnitude-70-s2") && !third.contains("taylor-70-a-s2"))
        let seeded = try #require(PruningExperimentPlan.runs(s, denseCheckpoint: "d", validation: validation).first { $0.name == "gradual-magnitude-70-s2" })
        #expect(seeded.overrides.last == "seed=2" && seeded.seed == 2)
        #expect(PruningExperimentPlan.primaryRunName(s, "csp-activations", target: 0.9, validation: validation) == "csp-activations-90-b")
    }

    /// One run per scheduled method to the largest size, holding every size, with the method's
    /// chosen setting once it is known; one-shot methods have none.
    @Test func oneRunEverySizeForEachScheduledMethod() throws {
        let s = try PruningExperimentSettings.parse(yaml: yaml.replacingOccurrences(of: "gradual-magnitude, taylor]", with: "gradual-magnitude, taylor, one-shot-magnitude]")
            + "\nsnapshots: [0.9, 0.7]\nsnapshot_steps: 10\n", source: "test")
        #expect(s.snapshots == [0.7, 0.9] && s.snapshotSteps == 10)
        let before = PruningExperimentPlan.runs(s, denseCheckpoint: "dense").filter { $0.snapshots != nil }.map(\.name)
        #expect(before == ["gradual-magnitude-snapshots"], "tuned methods wait for their setting; one-shot has none")
        let validation = ["csp-activations-80-a": 0.30, "csp-activations-80-b": 0.20, "taylor-80-a": 0.22, "taylor-80-b": 0.24]
        let runs = PruningExperimentPlan.runs(s, denseCheckpoint: "dense", validation: validation).filter { $0.snapshots != nil }
        #expect(runs.map(\.name) == ["csp-activations-snapshots-b", "gradual-magnitude-snapshots", "taylor-snapshots-a"])
        let csp = try #require(runs.first)
        #expect(csp.target == 0.9 && csp.setting == 1)
        #expect(csp.overrides.contains("optimizer.learning_rate=0.0001"))
        // 100 steps plus 9 more for each of the two holds, the final checkpoint and validation at its end.
        for key in ["steps=118", "checkpoint.every_steps=118", "coordinator.eval_every_steps=118",
                    "pruning.snapshots=[0.7, 0.9]", "pruning.snapshot_steps=10", "pruning.schedule.target=0.9"] {
            #expect(csp.overrides.contains(key), "\(key) not in \(csp.overrides)")
        }
        #expect(!csp.overrides.contains("steps=100"))
    }

    @Test func settingsErrorsNameTheKey() {
        let bad = yaml.replacingOccurrences(of: "    - [pruning.taylor_decay=0.99]\n", with: "")
        #expect(throws: ExperimentError.self) { try PruningExperimentSettings.parse(yaml: bad, source: "test") }
        do {
            _ = try PruningExperimentSettings.parse(yaml: bad, source: "sweep.yaml")
        } catch {
            #expect("\(error)".contains("tuning_settings.taylor must hold exactly two settings"))
        }
        let unknown = yaml.replacingOccurrences(of: "seeded: [csp-activations, best-baseline]", with: "seeded: [nope]")
        #expect(throws: ExperimentError.self) { try PruningExperimentSettings.parse(yaml: unknown, source: "test") }
    }
}
