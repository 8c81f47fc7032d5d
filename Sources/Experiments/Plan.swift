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
        let known: Set = ["base", "dense_checkpoint", "dense_config", "workers", "steps", "ramp_end_step", "interval", "methods",
                          "targets", "structured_group", "test", "test_channel", "bootstrap_samples", "set", "method_set", "tuning"]
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
        if let v = try string("test") { s.test = v }
        if let v = try string("test_channel") { s.testChannel = v }
        if let v = try string("tuning") { s.tuning = v }
        if let v = map["methods"] { s.methods = try strings("methods", v) }
        if let v = map["set"] { s.overrides = try strings("set", v) }
        if let v = map["targets"] {
            guard let list = v as? [Any] else { throw ExperimentError("\(source): targets must be a list of fractions (got \(v))") }
            s.targets = try list.map { t in
                guard let d = (t as? Double) ?? (t as? Int).map(Double.init), d > 0, d < 1 else {
                    throw ExperimentError("\(source): targets: \(t) is not a sparsity fraction in (0, 1)")
                }
                return d
            }
        }
        if let v = map["method_set"] {
            guard let m = v as? [String: Any] else { throw ExperimentError("\(source): method_set must map method names to lists of key=value") }
            for (k, list) in m { s.methodOverrides[k] = try strings("method_set.\(k)", list) }
        }
        let methods = Set(PruningExperimentPlan.knownMethods)
        for m in s.methods where !methods.contains(m) {
            throw ExperimentError("\(source): methods: unknown method \(m) (known: \(PruningExperimentPlan.knownMethods.joined(separator: ", ")))")
        }
        for m in s.methodOverrides.keys where !methods.contains(m) {
            throw ExperimentError("\(source): method_set: unknown method \(m)")
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
    public var method: String
    public var target: Double
    /// `--set` overrides on top of the base configuration.
    public var overrides: [String]
    /// "csp-80".
    public var name: String { "\(method)-\(Int((target * 100).rounded()))" }
}

/// The runs of a sweep, in order: target by target, every method at each.
public enum PruningExperimentPlan {
    public static let knownMethods = ["csp", "admm-magnitude", "gradual-magnitude", "one-shot-magnitude", "taylor", "structured", "low-rank"]

    public static func runs(_ s: PruningExperimentSettings, denseCheckpoint: String) -> [PlannedRun] {
        let (end, every) = s.ramp
        var runs: [PlannedRun] = []
        for target in s.targets {
            for method in s.methods {
                var o = ["init_from=\(denseCheckpoint)", "steps=\(s.steps)", "pruning.method=\(method)",
                         "pruning.schedule.kind=cubic",  // one-shot-magnitude applies its own
                         
                         "pruning.schedule.initial=0", "pruning.schedule.target=\(target)",
                         "pruning.schedule.start_step=0", "pruning.schedule.end_step=\(end)", "pruning.schedule.interval=\(every)",
                         "checkpoint.every_steps=\(s.steps)",
                         // Runs are scored on the test split afterwards; validation during a run
                         // would only serve tuning, and the sweep tunes nothing (see `tuning`).
                         "coordinator.eval_every_steps=0"]
                if method == "structured" {
                    let keep = max(1, Int(((1 - target) * Double(s.structuredGroup)).rounded()))
                    o += ["pruning.structured_group=\(s.structuredGroup)", "pruning.structured_keep=\(keep)"]
                }
                o += s.overrides + (s.methodOverrides[method] ?? [])
                runs.append(PlannedRun(method: method, target: target, overrides: o))
            }
        }
        return runs
    }
}

public struct ExperimentError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
