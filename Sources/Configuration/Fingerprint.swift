import Crypto
import Foundation
import Pruning
import Training
import Yams

/// The settings that change the maths of a run, and a fingerprint of them.
///
/// A resumed run must compute what the interrupted one would have: same model, data, seed,
/// batching, optimizer, schedules, pruning and `deterministic`. The number of workers, the step
/// count, addresses, deadlines, checkpointing and transport limits do not change a step's result
/// and are left out, as are file paths (the same data may live elsewhere on another machine; the
/// data's content enters through `dataFingerprint`).
public struct MathsFingerprint: Sendable, Equatable {
    /// `key = value` in key order, the text the fingerprint hashes.
    public let settings: [(key: String, value: String)]

    public static func == (a: MathsFingerprint, b: MathsFingerprint) -> Bool {
        a.settings.elementsEqual(b.settings) { $0 == $1 }
    }

    /// Keys and key prefixes (a trailing dot) that change the maths.
    static let included = ["seed", "deterministic", "model.", "data.", "augmentation.", "optimizer.", "pruning.",
                           "coordinator.global_batch", "coordinator.micro_batches", "coordinator.length_grouping",
                           "coordinator.broadcast_values", "coordinator.gradient_values"]
    /// Keys added after checkpoints were first written, with the value a checkpoint without them
    /// was computed with: absent there means this value.
    static let addedLater = ["coordinator.gradient_values": "f32", "pruning.snapshots": "[]", "pruning.snapshot_steps": "100",
                             "model.rnnt.predictor_embedding": "128", "model.rnnt.predictor_hidden": "256",
                             "model.rnnt.predictor_layers": "1", "model.rnnt.joint_dim": "256", "model.rnnt.ctc_weight": "0.0",
                             "pruning.rho_growth": "none", "pruning.recover": "target",
                             "model.dropout": "0.0", "pruning.swaps": "0", "pruning.restarts": "0"]
    /// Keys that change the maths only under some settings, left out of the others (so that
    /// adding one does not set runs it does not change apart from their checkpoints), and then
    /// also ignored in the list a checkpoint holds when the two are compared.
    static let onlyWhen: [String: @Sendable (RunConfiguration) -> Bool] = [
        "pruning.rho_growth": { $0.pruning.isDual },
        "pruning.recover": { $0.pruning.method == .csp && !$0.pruning.measurementOperator.readsActivations },
        "pruning.swaps": { $0.pruning.solvesRows },
        "pruning.restarts": { $0.pruning.solvesRows },
    ]
    /// Keys ``onlyWhen`` left out of this fingerprint.
    public let ignored: Set<String>
    /// Paths: where the data are, not what they are.
    static let excluded = ["data.train", "data.valid", "data.valid_channel", "data.valid_seen"]

    public init(config: RunConfiguration, dataFingerprint: String) {
        var flat: [(String, String)] = []
        Self.flatten(config.yaml, prefix: "", into: &flat)
        var picked = flat.filter { key, _ in
            !Self.excluded.contains(key) && Self.included.contains { $0.hasSuffix(".") ? key.hasPrefix($0) : key == $0 }
        }
        let ignored = Set(Self.onlyWhen.filter { !$0.value(config) }.keys)
        picked.removeAll { ignored.contains($0.0) }
        self.ignored = ignored
        if !dataFingerprint.isEmpty { picked.append(("data.content", dataFingerprint)) }
        // The fixed-point unit is part of deterministic mode's maths: a build with another
        // unit must not continue a run bit for bit as if nothing changed.
        if config.deterministic { picked.append(("deterministic.scale_bits", String(GradientAccumulator.scaleBits))) }
        settings = picked.sorted { $0.0 < $1.0 }.map { (key: $0.0, value: $0.1) }
    }

    /// Parses `text` as written by ``text``.
    public init(text: String) {
        ignored = []
        settings = text.split(separator: "\n").compactMap { line in
            guard let eq = line.range(of: " = ") else { return nil }
            return (key: String(line[..<eq.lowerBound]), value: String(line[eq.upperBound...]))
        }
    }

    public var text: String { settings.map { "\($0.key) = \($0.value)" }.joined(separator: "\n") }

    /// SHA-256 of ``text``, 32 bytes.
    public var digest: [UInt8] { Array(SHA256.hash(data: Data(text.utf8))) }

    public var hex: String { digest.map { String(format: "%02x", $0) }.joined() }

    /// The settings that differ, as "key: value here (value there)" lines; empty when equal.
    public func differences(from other: MathsFingerprint, ours: String = "now", theirs: String = "checkpoint") -> [String] {
        let a = Dictionary(settings.map { ($0.key, $0.value) }, uniquingKeysWith: { x, _ in x })
        let b = Dictionary(other.settings.map { ($0.key, $0.value) }, uniquingKeysWith: { x, _ in x })
        return Set(a.keys).union(b.keys).subtracting(ignored.union(other.ignored)).sorted().compactMap { key in
            let x = a[key] ?? Self.addedLater[key], y = b[key] ?? Self.addedLater[key]
            guard x != y else { return nil }
            return "\(key): \(x ?? "(absent)") \(ours), \(y ?? "(absent)") in the \(theirs)"
        }
    }

    static func flatten(_ node: Node, prefix: String, into out: inout [(String, String)]) {
        switch node {
        case let .mapping(m):
            for (k, v) in m {
                let key = k.string ?? ""
                flatten(v, prefix: prefix.isEmpty ? key : "\(prefix).\(key)", into: &out)
            }
        case let .sequence(s):
            out.append((prefix, "[" + s.map { $0.string ?? "?" }.joined(separator: ", ") + "]"))
        case let .scalar(s):
            out.append((prefix, s.string))
        case .alias:
            out.append((prefix, "?"))
        }
    }
}
