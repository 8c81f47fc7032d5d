import Checkpoints
import Coordination
import Foundation
import Models
import Observe
import Pruning
import Speech
import Training
import Transport
import Yams

/// The whole configuration of a run. Each module owns its settings struct; this only composes
/// them and maps them to YAML keys (ConfigSchema.swift, RunConfiguration+Schema.swift).
public struct RunConfiguration: Sendable, Equatable {
    /// Seeds everything: initial weights, data order, data generation.
    public var seed: UInt64 = 1
    /// The run's total number of steps (a resumed run continues up to it).
    public var steps = 200
    /// A checkpoint whose model weights start the run (fine-tuning, pruning a trained model);
    /// empty: initialise from `seed`. The optimizer starts fresh.
    public var initFrom = ""
    /// A step's result does not depend on the number of workers, on which worker computed which
    /// micro-batch, on the order gradient chunks arrive in, or on a kill and resume: gradients
    /// are summed exactly in fixed point (see Sources/Training/GradientAccumulator.swift).
    public var deterministic = false
    /// Deterministic runs: the compute signature every worker must have ("openblas Haswell,
    /// kernels avx2+fma"); empty: the coordinator's own (or a resumed checkpoint's).
    public var computeSignature = ""
    public var model = ModelSettings()
    public var data = DataSettings()
    public var augmentation = AugmentationSettings()
    public var optimizer = OptimizerSettings()
    public var pruning = PruningSettings()
    public var coordinator = CoordinatorSettings()
    public var checkpoint = CheckpointSettings()
    public var transport = TransportSettings()
    public var security = SecuritySettings()
    public var observe = ObserveSettings()

    public init() {}

    /// Reads a YAML file (or the defaults when `file` is nil), then applies `overrides`, each
    /// `dotted.key=value` as given to `--set`.
    public static func load(file: String?, overrides: [String] = []) throws -> RunConfiguration {
        guard let file else { return try load(text: nil, source: "defaults", overrides: overrides) }
        let text: String
        do { text = try String(contentsOfFile: file, encoding: .utf8) } catch {
            throw ConfigError(source: file, line: nil, key: "", message: "cannot read the configuration file: \(error.localizedDescription)")
        }
        return try load(text: text, source: file, overrides: overrides)
    }

    /// The same from YAML text (a checkpoint's configuration); errors name `source`.
    public static func load(text: String?, source: String, overrides: [String] = []) throws -> RunConfiguration {
        var root: Node = Node([(Node, Node)]())
        if let text {
            do {
                if let node = try Yams.compose(yaml: text) { root = node }
            } catch {
                throw ConfigError(source: source, line: nil, key: "", message: "not valid YAML: \(error)")
            }
        }
        var config = try RunConfiguration.parse(root, at: "", source: source)
        for override in overrides {
            try config.apply(override: override)
        }
        // A check across keys may fail because of an override: the message says where each came from.
        let origin = overrides.isEmpty ? source : "\(source) with \(overrides.map { "--set \($0)" }.joined(separator: " "))"
        try config.validate(source: origin)
        try config.validateServing(source: origin)
        return config
    }

    /// Checks of how a run is served, made when a run starts or resumes (``load``), not when a
    /// checkpoint's configuration is read to score, export or decode its weights: a checkpoint
    /// written before a check was added stays readable.
    public func validateServing(source: String) throws(ConfigError) {
        // In steady state a worker keeps send_window chunks, its next work request and a weights
        // receipt in flight at once: a lower cap refuses its own chunks as overloaded at every
        // micro-batch. (Requests it has given up on, held or re-sent, can add to that briefly.)
        if transport.sendWindow + 2 > coordinator.maxRequestsInFlight {
            throw ConfigError(source: source, line: nil, key: "coordinator.max_requests_in_flight",
                              message: "\(coordinator.maxRequestsInFlight) is too few for transport.send_window = \(transport.sendWindow): a worker keeps its send window's chunks, its next work request and a weights receipt in flight at once, so allow at least \(transport.sendWindow + 2) (or lower transport.send_window)")
        }
    }

    /// Parses YAML text (for configurations carried by messages and checkpoints).
    public static func parse(yaml text: String, source: String) throws -> RunConfiguration {
        let root = try Yams.compose(yaml: text) ?? Node([(Node, Node)]())
        let config = try RunConfiguration.parse(root, at: "", source: source)
        try config.validate(source: source)
        return config
    }

    /// Applies one `key.path=value` override.
    public mutating func apply(override: String) throws(ConfigError) {
        let source = "--set \(override)"
        guard let eq = override.firstIndex(of: "="), eq != override.startIndex else {
            throw ConfigError(source: source, line: nil, key: "", message: "expected key=value, for example optimizer.learning_rate=0.01")
        }
        let path = override[..<eq].split(separator: ".").map(String.init)
        let valueText = String(override[override.index(after: eq)...])
        let value: Node
        do { value = try Yams.compose(yaml: valueText) ?? Node("") } catch {
            throw ConfigError(source: source, line: nil, key: path.joined(separator: "."), message: "value is not valid YAML")
        }
        var nested = value
        for key in path.reversed() { nested = Node([(Node(key), nested)]) }
        // Re-read the override on top of the current values: unknown keys and bad values are
        // reported exactly as in a file.
        var merged = yaml
        merged = Self.merge(merged, nested)
        self = try RunConfiguration.parse(merged, at: "", source: source)
    }

    static func merge(_ base: Node, _ top: Node) -> Node {
        guard case let .mapping(b) = base, case let .mapping(t) = top else { return top }
        var pairs = Array(b.map { ($0.key, $0.value) })
        for (k, v) in t {
            if let i = pairs.firstIndex(where: { $0.0 == k }) { pairs[i].1 = merge(pairs[i].1, v) } else { pairs.append((k, v)) }
        }
        return Node(pairs)
    }

    /// Checks that involve more than one key.
    public func validate(source: String) throws(ConfigError) {
        if coordinator.microBatches > coordinator.globalBatch {
            throw ConfigError(source: source, line: nil, key: "coordinator.micro_batches",
                              message: "\(coordinator.microBatches) micro-batches cannot be cut from a global batch of \(coordinator.globalBatch) examples")
        }
        if coordinator.globalBatch > data.examples {
            throw ConfigError(source: source, line: nil, key: "coordinator.global_batch",
                              message: "the global batch (\(coordinator.globalBatch)) is larger than the data set (\(data.examples) examples)")
        }
        let schedule = pruning.schedule
        if pruning.method != .none, let last = schedule.holds.last, last.snapshotStep > steps {
            throw ConfigError(source: source, line: nil, key: "pruning.snapshots",
                              message: "the snapshot at \(String(format: "%g", last.size * 100))% is kept after step \(last.snapshotStep) (the ramp to end_step \(schedule.endStep) plus \(schedule.snapshotSteps) steps held at each of \(schedule.holds.count) sizes), after the run's last step (steps = \(steps)): raise steps or lower pruning.snapshot_steps")
        }
        if transport.maxMessageBytes < coordinator.chunkValues * 4 + 4096 {
            throw ConfigError(source: source, line: nil, key: "transport.max_message_bytes",
                              message: "\(transport.maxMessageBytes) bytes cannot carry a gradient chunk of \(coordinator.chunkValues) values")
        }
    }

    /// The configuration as YAML, every key present.
    public func yamlText() -> String {
        (try? Yams.serialize(node: yaml)) ?? ""
    }
}

extension RunConfiguration {
    /// The configuration as one JSON object (for `config dump --json`).
    public func jsonText() -> String {
        func convert(_ node: Node) -> Any {
            switch node {
            case let .mapping(m):
                var out: [String: Any] = [:]
                for (k, v) in m { out[k.string ?? ""] = convert(v) }
                return out
            case let .sequence(s):
                return s.map(convert)
            case let .scalar(s):
                if let b = node.bool, ["true", "false"].contains(s.string) { return b }
                if let i = node.int { return i }
                if let d = node.float { return d }
                return s.string
            case .alias:
                return NSNull()
            }
        }
        let object = convert(yaml)
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}
