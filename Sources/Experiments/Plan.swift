import Foundation
import Yams

/// The settings of `csptrain experiment pruning`: which methods at which targets, from which dense
/// model, with what step budget, scored on which test sets. Read from YAML; every key but `base`
/// has a default (see Configs/experiment-pruning.yaml).
public struct PruningExperimentSettings: Sendable, Equatable {
    /// The launch configuration every pruning run starts from (model, data, optimizer, pruning
    /// defaults such as `exclude`).
    public var base = ""
    /// The trained dense model every method starts from; empty: train one first with
    /// `dense_config` into OUT/dense (or reuse it when it is there).
    public var denseCheckpoint = ""
    public var denseConfig = ""
    public var workers = 2
    /// Steps per pruning run: gradual and dual methods ramp over the first `ramp_end_step`, all
    /// fine-tune with the mask fixed after that. One-shot prunes at step 0.
    public var steps = 1500
    /// 0: two thirds of `steps`, rounded down to a multiple of `interval`.
    public var rampEndStep = 0
    /// Steps between mask (support, rank) updates; 0: a sixth of the ramp.
    public var interval = 0
    public var methods = ["csp", "admm-magnitude", "gradual-magnitude", "one-shot-magnitude", "taylor", "structured", "low-rank"]
    /// In the order they are run (a sweep cut short has whole targets done first).
    public var targets = [0.5, 0.7, 0.8, 0.9]
    /// structured: N:M with this M; N = round((1 − target) · M).
    public var structuredGroup = 10
    /// Test manifests (held-out sentences and voices; clean and channel-degraded).
    public var test = ""
    public var testChannel = ""
    /// Paired-bootstrap resamples for the confidence intervals.
    public var bootstrapSamples = 2000
    /// `--set` overrides for every run, then per method.
    public var overrides: [String] = []
    public var methodOverrides: [String: [String]] = [:]
    /// The hyperparameter tuning each method received, stated in results.md.
    public var tuning = "none: every method ran with the defaults fixed before the sweep (one configuration each)"
    /// Named method configurations (`--set` overrides, one of them `pruning.method=...`), usable
    /// in `methods` beside the methods themselves: `csp-activations: [pruning.method=csp,
    /// pruning.operator=activations]`.
    public var variants: [String: [String]] = [:]
    /// Per method (or variant): exactly two settings (lists of overrides), both tried at
    /// `tuning_target`; the one with the lower clean validation WER is used at every other target.
    public var tuningSettings: [String: [[String]]] = [:]
    public var tuningTarget = 0.8
    /// Seeds run again at every target, beyond the configuration's own, for `seeded` (methods,
    /// variants, or `best-baseline`: the non-CSP method with the lowest validation WER there).
    public var extraSeeds: [Int] = []
    public var seeded: [String] = []
    /// "One run, every size": per scheduled method (with its chosen setting), one more run that
    /// ramps to the largest of these with `pruning.snapshots` at each, every snapshot scored
    /// beside the runs per target. Empty: none.
    public var snapshots: [Double] = []
    /// Steps each snapshot size is held (`pruning.snapshot_steps`).
    public var snapshotSteps = 100

    /// The `--set` overrides that make `name` (a method or a variant).
    public func overrides(of name: String) -> [String] { variants[name] ?? ["pruning.method=\(name)"] }
    /// The pruning method `name` runs.
    public func method(of name: String) -> String {
        overrides(of: name).last { $0.hasPrefix("pruning.method=") }.map { String($0.dropFirst("pruning.method=".count)) } ?? name
    }

    public init() {}

    /// (ramp end, interval) as used.
    public var ramp: (end: Int, interval: Int) {
        var end = rampEndStep > 0 ? rampEndStep : steps * 2 / 3
        let every = interval > 0 ? interval : max(1, end / 6)
        if rampEndStep <= 0 { end = end / every * every }
        return (end, every)
    }

    public static func parse(yaml text: String, source: String) throws -> PruningExperimentSettings {
        let node: Any?
        do { node = try Yams.load(yaml: text) } catch {
            throw ExperimentError("\(source): not valid YAML: \(error)")
        }
        guard let map = node as? [String: Any] else { throw ExperimentError("\(source): expected a mapping of settings at the top level") }
        var s = PruningExperimentSettings()
        func string(_ key: String) throws -> String? {
            guard let v = map[key] else { return nil }
            guard let t = v as? String else { throw ExperimentError("\(source): \(key) must be a string (got \(v))") }
            return t
        }
        func int(_ key: String, minimum: Int) throws -> Int? {
            guard let v = map[key] else { return nil }
            guard let i = v as? Int, i >= minimum else { throw ExperimentError("\(source): \(key) must be an integer ≥ \(minimum) (got \(v))") }
            return i
        }
        func strings(_ key: String, _ v: Any) throws -> [String] {
            guard let list = v as? [Any], list.allSatisfy({ $0 is String }) else {
                throw ExperimentError("\(source): \(key) must be a list of strings (got \(v))")
            }
            return list.map { $0 as! String }
        }
        func fractions(_ key: String, _ v: Any) throws -> [Double] {
            guard let list = v as? [Any] else { throw ExperimentError("\(source): \(key) must be a list of fractions (got \(v))") }
            return try list.map { t in
                guard let d = (t as? Double) ?? (t as? Int).map(Double.init), d > 0, d < 1 else {
                    throw ExperimentError("\(source): \(key): \(t) is not a sparsity fraction in (0, 1)")
                }
                return d
            }
        }
        let known: Set = ["base", "dense_checkpoint", "dense_config", "workers", "steps", "ramp_end_step", "interval", "methods",
                          "targets", "structured_group", "test", "test_channel", "bootstrap_samples", "set", "method_set", "tuning",
                          "variants", "tuning_settings", "tuning_target", "extra_seeds", "seeded", "snapshots", "snapshot_steps"]
        if let unknown = map.keys.filter({ !known.contains($0) }).sorted().first {
            throw ExperimentError("\(source): unknown key \(unknown) (known: \(known.sorted().joined(separator: ", ")))")
        }
        if let v = try string("base") { s.base = v }
        if let v = try string("dense_checkpoint") { s.denseCheckpoint = v }
        if let v = try string("dense_config") { s.denseConfig = v }
        if let v = try int("workers", minimum: 1) { s.workers = v }
        if let v = try int("steps", minimum: 1) { s.steps = v }
        if let v = try int("ramp_end_step", minimum: 0) { s.rampEndStep = v }
        if let v = try int("interval", minimum: 0) { s.interval = v }
        if let v = try int("structured_group", minimum: 2) { s.structuredGroup = v }
        if let v = try int("bootstrap_samples", minimum: 100) { s.bootstrapSamples = v }
        if let v = try int("snapshot_steps", minimum: 1) { s.snapshotSteps = v }
        if let v = map["snapshots"] { s.snapshots = try fractions("snapshots", v).sorted() }
        if let v = try string("test") { s.test = v }
        if let v = try string("test_channel") { s.testChannel = v }
        if let v = try string("tuning") { s.tuning = v }
        if let v = map["methods"] { s.methods = try strings("methods", v) }
        if let v = map["set"] { s.overrides = try strings("set", v) }
        if let v = map["targets"] { s.targets = try fractions("targets", v) }
        if let v = map["variants"] {
            guard let m = v as? [String: Any] else { throw ExperimentError("\(source): variants must map names to lists of key=value") }
            for (k, list) in m {
                let o = try strings("variants.\(k)", list)
                guard o.contains(where: { $0.hasPrefix("pruning.method=") }) else {
                    throw ExperimentError("\(source): variants.\(k) must set pruning.method")
                }
                s.variants[k] = o
            }
        }
        if let v = map["tuning_settings"] {
            guard let m = v as? [String: Any] else { throw ExperimentError("\(source): tuning_settings must map methods to two lists of key=value") }
            for (k, pair) in m {
                guard let lists = pair as? [Any], lists.count == 2 else {
                    throw ExperimentError("\(source): tuning_settings.\(k) must hold exactly two settings (lists of key=value), tried at tuning_target")
                }
                s.tuningSettings[k] = try lists.map { try strings("tuning_settings.\(k)", $0) }
            }
        }
        if let v = map["tuning_target"] {
            guard let d = (v as? Double) ?? (v as? Int).map(Double.init), d > 0, d < 1 else {
                throw ExperimentError("\(source): tuning_target must be a sparsity fraction in (0, 1) (got \(v))")
            }
            s.tuningTarget = d
        }
        if let v = map["extra_seeds"] {
            guard let list = v as? [Int] else { throw ExperimentError("\(source): extra_seeds must be a list of integers (got \(v))") }
            s.extraSeeds = list
        }
        if let v = map["seeded"] { s.seeded = try strings("seeded", v) }
        if let v = map["method_set"] {
            guard let m = v as? [String: Any] else { throw ExperimentError("\(source): method_set must map method names to lists of key=value") }
            for (k, list) in m { s.methodOverrides[k] = try strings("method_set.\(k)", list) }
        }
        let methods = Set(PruningExperimentPlan.knownMethods).union(s.variants.keys)
        for m in s.methods where !methods.contains(m) {
            throw ExperimentError("\(source): methods: unknown method \(m) (known: \(methods.sorted().joined(separator: ", ")); name others under variants)")
        }
        for m in s.variants.keys.map(s.method(of:)) where !PruningExperimentPlan.knownMethods.contains(m) {
            throw ExperimentError("\(source): variants: unknown pruning.method \(m)")
        }
        for m in s.methodOverrides.keys where !methods.contains(m) {
            throw ExperimentError("\(source): method_set: unknown method \(m)")
        }
        for m in s.tuningSettings.keys where !s.methods.contains(m) {
            throw ExperimentError("\(source): tuning_settings: \(m) is not among methods")
        }
        for m in s.seeded where !s.methods.contains(m) && m != "best-baseline" {
            throw ExperimentError("\(source): seeded: \(m) is not among methods (or best-baseline)")
        }
        if !s.tuningSettings.isEmpty, !s.targets.contains(s.tuningTarget) {
            throw ExperimentError("\(source): tuning_target \(s.tuningTarget) must be one of targets \(s.targets)")
        }
        let percents = s.targets.map { Int(($0 * 100).rounded()) }
        guard Set(percents).count == percents.count else {
            throw ExperimentError("\(source): targets \(s.targets) name the same whole percentage twice (runs are named by it, e.g. csp-70)")
        }
        guard !s.base.isEmpty else { throw ExperimentError("\(source): base (the launch configuration of every run) is required") }
        let (end, every) = s.ramp
        guard end <= s.steps, every <= max(1, end) else {
            throw ExperimentError("\(source): the ramp (end step \(end), interval \(every)) must fit in steps (\(s.steps))")
        }
        return s
    }
}

/// One pruning run of the sweep.
public struct PlannedRun: Sendable, Equatable {
    /// The method or variant.
    public var method: String
    public var target: Double
    /// The tuning setting (0: "a", 1: "b"), for methods with tuning settings.
    public var setting: Int?
    /// An extra seed, for the repeats of `seeded`.
    public var seed: Int?
    /// The sizes a "one run, every size" run keeps (its target is the largest); nil otherwise.
    public var snapshots: [Double]? = nil
    /// `--set` overrides on top of the base configuration.
    public var overrides: [String]
    /// "csp-80", "csp-activations-80-b", "taylor-90-s2".
    public var name: String {
        var n = snapshots == nil ? "\(method)-\(Int((target * 100).rounded()))" : "\(method)-snapshots"
        if let setting { n += "-" + ["a", "b"][setting] }
        if let seed { n += "-s\(seed)" }
        return n
    }
}

/// The runs of a sweep, in order: the tuning target first (both settings of every tuned method),
/// then the other targets with the settings chosen on validation, then the extra seeds. A run
/// whose setting or baseline is not decided yet (its tuning runs have not finished) is left out
/// until it is: the command plans again after every run.
public enum PruningExperimentPlan {
    public static let knownMethods = ["csp", "admm-magnitude", "gradual-magnitude", "one-shot-magnitude", "taylor", "structured", "low-rank",
                                      "wanda", "one-shot-reconstruction"]

    /// `validation`: clean validation WER of finished runs, by run name.
    public static func runs(_ s: PruningExperimentSettings, denseCheckpoint: String, validation: [String: Double] = [:]) -> [PlannedRun] {
        var runs: [PlannedRun] = []
        let targets = s.tuningSettings.isEmpty ? s.targets : [s.tuningTarget] + s.targets.filter { $0 != s.tuningTarget }
        for target in targets {
            for method in s.methods {
                if let settings = s.tuningSettings[method] {
                    if target == s.tuningTarget {
                        for i in settings.indices { runs.append(make(s, method, target, setting: i, seed: nil, dense: denseCheckpoint)) }
                    } else if let i = chosenSetting(s, method, validation: validation) {
                        runs.append(make(s, method, target, setting: i, seed: nil, dense: denseCheckpoint))
                    }
                } else {
                    runs.append(make(s, method, target, setting: nil, seed: nil, dense: denseCheckpoint))
                }
            }
        }
        for target in targets {
            for name in s.seeded {
                guard let method = name == "best-baseline" ? bestBaseline(s, target: target, validation: validation) : name else { continue }
                let setting: Int?
                if s.tuningSettings[method] != nil {
                    guard let i = chosenSetting(s, method, validation: validation) else { continue }
                    setting = i
                } else {
                    setting = nil
                }
                for seed in s.extraSeeds where !runs.contains(where: { $0.method == method && $0.target == target && $0.seed == seed }) {
                    runs.append(make(s, method, target, setting: setting, seed: seed, dense: denseCheckpoint))
                }
            }
        }
        for method in s.methods where !s.snapshots.isEmpty && rampsThroughSizes(s.method(of: method)) {
            if s.tuningSettings[method] != nil {
                guard let i = chosenSetting(s, method, validation: validation) else { continue }
                runs.append(snapshotRun(s, method, setting: i, dense: denseCheckpoint))
            } else {
                runs.append(snapshotRun(s, method, setting: nil, dense: denseCheckpoint))
            }
        }
        return runs
    }

    /// Methods whose schedule ramps through sizes (one-shot methods prune once; structured N:M
    /// has one N per run).
    public static func rampsThroughSizes(_ method: String) -> Bool {
        !["one-shot-magnitude", "one-shot-reconstruction", "structured"].contains(method)
    }

    /// Steps of a snapshot run: the sweep's, plus `snapshot_steps − 1` per size held.
    public static func snapshotRunSteps(_ s: PruningExperimentSettings) -> Int {
        s.steps + s.snapshots.count * (s.snapshotSteps - 1)
    }

    /// One run to the largest snapshot size, holding every size on the way.
    static func snapshotRun(_ s: PruningExperimentSettings, _ method: String, setting: Int?, dense: String) -> PlannedRun {
        var run = make(s, method, s.snapshots.last!, setting: setting, seed: nil, dense: dense)
        let steps = snapshotRunSteps(s)
        run.overrides = run.overrides.map { o in
            for key in ["steps=", "checkpoint.every_steps=", "coordinator.eval_every_steps="] where o.hasPrefix(key) { return key + String(steps) }
            return o
        }
        run.overrides += ["pruning.snapshots=[\(s.snapshots.map { String($0) }.joined(separator: ", "))]", "pruning.snapshot_steps=\(s.snapshotSteps)"]
        run.snapshots = s.snapshots
        return run
    }

    /// The tuning setting with the lower validation WER (the first on a tie), once both are known.
    public static func chosenSetting(_ s: PruningExperimentSettings, _ method: String, validation: [String: Double]) -> Int? {
        guard let settings = s.tuningSettings[method] else { return nil }
        let wers = settings.indices.map { validation[make(s, method, s.tuningTarget, setting: $0, seed: nil, dense: "").name] }
        guard wers.allSatisfy({ $0 != nil }) else { return nil }
        return wers.indices.min { wers[$0]! < wers[$1]! }
    }

    /// The run whose numbers stand for (method, target) in the table: the chosen setting, the
    /// configuration's own seed.
    public static func primaryRunName(_ s: PruningExperimentSettings, _ method: String, target: Double, validation: [String: Double]) -> String? {
        if s.tuningSettings[method] != nil {
            guard let i = chosenSetting(s, method, validation: validation) else { return nil }
            return make(s, method, target, setting: i, seed: nil, dense: "").name
        }
        return make(s, method, target, setting: nil, seed: nil, dense: "").name
    }

    /// The method that is not CSP with the lowest validation WER at `target`, once every one is known.
    public static func bestBaseline(_ s: PruningExperimentSettings, target: Double, validation: [String: Double]) -> String? {
        let baselines = s.methods.filter { s.method(of: $0) != "csp" }
        var best: (String, Double)?
        for m in baselines {
            guard let name = primaryRunName(s, m, target: target, validation: validation), let w = validation[name] else { return nil }
            if best == nil || w < best!.1 { best = (m, w) }
        }
        return best?.0
    }

    static func make(_ s: PruningExperimentSettings, _ method: String, _ target: Double, setting: Int?, seed: Int?, dense: String) -> PlannedRun {
        let (end, every) = s.ramp
        let base = s.method(of: method)
        var o = ["init_from=\(dense)", "steps=\(s.steps)"] + s.overrides(of: method) + [
            "pruning.schedule.kind=cubic",  // one-shot methods apply their own
            "pruning.schedule.initial=0", "pruning.schedule.target=\(target)",
            "pruning.schedule.start_step=0", "pruning.schedule.end_step=\(end)", "pruning.schedule.interval=\(every)",
            "checkpoint.every_steps=\(s.steps)",
            // One validation pass at the end: tuning and the choice of the best baseline read it.
            "coordinator.eval_every_steps=\(s.steps)",
        ]
        if base == "structured" {
            let keep = max(1, Int(((1 - target) * Double(s.structuredGroup)).rounded()))
            o += ["pruning.structured_group=\(s.structuredGroup)", "pruning.structured_keep=\(keep)"]
        }
        o += s.overrides + (s.methodOverrides[method] ?? [])
        if let setting, let settings = s.tuningSettings[method] { o += settings[setting] }
        if let seed { o += ["seed=\(seed)"] }
        return PlannedRun(method: method, target: target, setting: setting, seed: seed, overrides: o)
    }
}

public struct ExperimentError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
