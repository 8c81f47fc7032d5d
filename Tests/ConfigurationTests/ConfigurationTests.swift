import Foundation
import Testing
@testable import Configuration
import CompressedSensing
import Pruning

struct ConfigurationTests {
    func file(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("csptrain-config-\(UInt64.random(in: 0 ... .max)).yaml").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func defaultsAreComplete() throws {
        let c = try RunConfiguration.load(file: nil)
        #expect(c == RunConfiguration())
    }

    @Test func fileValuesAreRead() throws {
        let path = try file("seed: 9\noptimizer:\n  kind: sgd\n  learning_rate: 0.5\n  schedule: {decay: cosine}\n")
        let c = try RunConfiguration.load(file: path)
        #expect(c.seed == 9 && c.optimizer.kind == .sgd && c.optimizer.learningRate == 0.5 && c.optimizer.schedule.decay == .cosine)
        #expect(c.steps == RunConfiguration().steps)
    }

    @Test func unknownKeyNamesFileLineKeyAndTheKnownKeys() throws {
        let path = try file("seed: 1\noptimizer:\n  lerning_rate: 0.1\n")
        let error = #expect(throws: ConfigError.self) { try RunConfiguration.load(file: path) }
        #expect(error?.source == path)
        #expect(error?.line == 3)
        #expect(error?.key == "optimizer.lerning_rate")
        #expect(error?.description.contains("learning_rate") == true)
    }

    @Test func badValuesSayWhatWasExpected() throws {
        let notNumber = #expect(throws: ConfigError.self) { try RunConfiguration.load(file: try file("steps: many\n")) }
        #expect(notNumber?.key == "steps")
        #expect(notNumber?.description.contains("expected a whole number, found 'many'") == true)
        let badEnum = #expect(throws: ConfigError.self) { try RunConfiguration.load(file: try file("optimizer: {kind: lbfgs}\n")) }
        #expect(badEnum?.description.contains("one of sgd, adam, adamw") == true)
        let negative = #expect(throws: ConfigError.self) { try RunConfiguration.load(file: try file("coordinator: {micro_batches: 0}\n")) }
        #expect(negative?.key == "coordinator.micro_batches")
        let scalarForSection = #expect(throws: ConfigError.self) { try RunConfiguration.load(file: try file("model: 3\n")) }
        #expect(scalarForSection?.description.contains("expected a mapping") == true)
    }

    @Test func overridesWinOverTheFile() throws {
        let path = try file("steps: 10\noptimizer: {learning_rate: 0.5}\n")
        let c = try RunConfiguration.load(file: path, overrides: ["steps=20", "optimizer.learning_rate=0.02"])
        #expect(c.steps == 20)
        #expect(c.optimizer.learningRate == 0.02)
        #expect(c.optimizer.kind == RunConfiguration().optimizer.kind)
    }

    @Test func badOverridesNameTheFlag() {
        let unknown = #expect(throws: ConfigError.self) { try RunConfiguration.load(file: nil, overrides: ["optimiser.kind=sgd"]) }
        #expect(unknown?.source == "--set optimiser.kind=sgd")
        #expect(unknown?.key == "optimiser")
        let malformed = #expect(throws: ConfigError.self) { try RunConfiguration.load(file: nil, overrides: ["steps"]) }
        #expect(malformed?.description.contains("key=value") == true)
    }

    @Test func crossKeyChecks() {
        let error = #expect(throws: ConfigError.self) {
            try RunConfiguration.load(file: nil, overrides: ["coordinator.global_batch=4", "coordinator.micro_batches=8"])
        }
        #expect(error?.key == "coordinator.micro_batches")
        // A worker's own send window, next work request and receipt must fit under the cap.
        let window = #expect(throws: ConfigError.self) {
            try RunConfiguration.load(file: nil, overrides: ["transport.send_window=7", "coordinator.max_requests_in_flight=8"])
        }
        #expect(window?.key == "coordinator.max_requests_in_flight")
        #expect(window?.description.contains("at least 9") == true, "\(String(describing: window))")
        // The message says the values came from the overrides, not from the defaults alone.
        #expect(window?.description.hasPrefix("defaults with --set transport.send_window=7 --set coordinator.max_requests_in_flight=8: ") == true,
                "\(String(describing: window))")
        #expect(throws: Never.self) {
            try RunConfiguration.load(file: nil, overrides: ["transport.send_window=6", "coordinator.max_requests_in_flight=8"])
        }
        // A checkpoint's configuration written before the check stays readable (eval, export).
        #expect(throws: Never.self) {
            try RunConfiguration.parse(yaml: "transport: {send_window: 7}\ncoordinator: {max_requests_in_flight: 8}\n", source: "old.ckpt")
        }
    }

    @Test func pruningSectionIsReadAndDumpedBack() throws {
        let path = try file("""
        pruning:
          method: csp
          exclude: ["conv.0.*", "output.*"]
          measurements: auto
          operator: srht
          solver: fista
          schedule: {kind: cubic, target: 0.9, start_step: 100, end_step: 1100, interval: 50}
        """)
        let c = try RunConfiguration.load(file: path)
        #expect(c.pruning.method == .csp && c.pruning.exclude == ["conv.0.*", "output.*"] && c.pruning.measurements == .auto)
        #expect(c.pruning.measurementOperator == .srht && c.pruning.solver == .fista)
        #expect(c.pruning.schedule.target == 0.9 && c.pruning.schedule.endStep == 1100 && c.pruning.schedule.interval == 50)
        let ratio = try RunConfiguration.load(file: path, overrides: ["pruning.measurements=0.25", "pruning.method=admm-magnitude"])
        #expect(ratio.pruning.measurements == .ratio(0.25) && ratio.pruning.method == .admmMagnitude)
        #expect(try RunConfiguration.parse(yaml: c.yamlText(), source: "dump") == c)
        let bad = #expect(throws: ConfigError.self) { try RunConfiguration.load(file: path, overrides: ["pruning.measurements=2"]) }
        #expect(bad?.key == "pruning.measurements" && bad?.description.contains("auto or a ratio") == true)
        let method = #expect(throws: ConfigError.self) { try RunConfiguration.load(file: nil, overrides: ["pruning.method=random"]) }
        #expect(method?.description.contains("gradual-magnitude") == true)
    }

    @Test func checkpointWriteFailurePolicyIsReadDumpedAndChecked() throws {
        #expect(RunConfiguration().checkpoint.onWriteFailure == .stop)
        let c = try RunConfiguration.load(file: try file("checkpoint: {every_steps: 5, on_write_failure: continue}\n"))
        #expect(c.checkpoint.onWriteFailure == .continue && c.checkpoint.everySteps == 5)
        #expect(c.yamlText().contains("on_write_failure: continue"))
        #expect(try RunConfiguration.parse(yaml: c.yamlText(), source: "dump") == c)
        let json = try JSONSerialization.jsonObject(with: Data(RunConfiguration().jsonText().utf8)) as? [String: Any]
        #expect((json?["checkpoint"] as? [String: Any])?["on_write_failure"] as? String == "stop")
        let bad = #expect(throws: ConfigError.self) { try RunConfiguration.load(file: nil, overrides: ["checkpoint.on_write_failure=retry"]) }
        #expect(bad?.key == "checkpoint.on_write_failure" && bad?.description.contains("one of stop, continue") == true)
        let typo = #expect(throws: ConfigError.self) { try RunConfiguration.load(file: try file("checkpoint:\n  on_write_fail: stop\n")) }
        #expect(typo?.line == 2 && typo?.description.contains("on_write_failure") == true)
    }

    @Test func dumpedYAMLReadsBackToTheSameConfiguration() throws {
        var c = RunConfiguration()
        c.seed = 77
        c.optimizer.kind = .adam
        c.coordinator.stepDeadlineSeconds = 12.5
        let again = try RunConfiguration.parse(yaml: c.yamlText(), source: "dump")
        #expect(again == c)
        let json = try JSONSerialization.jsonObject(with: Data(c.jsonText().utf8)) as? [String: Any]
        #expect((json?["seed"] as? Int) == 77)
    }
}

struct FingerprintTests {
    @Test func coversTheMathsAndNothingElse() throws {
        let base = try RunConfiguration.load(file: nil)
        let print = MathsFingerprint(config: base, dataFingerprint: "abc")
        // Not the maths: workers, steps, deadlines, checkpoints, transport, data paths.
        for harmless in ["steps=999", "coordinator.min_workers=5", "coordinator.step_deadline_seconds=3", "checkpoint.every_steps=1",
                         "checkpoint.keep=9", "checkpoint.on_write_failure=continue", "transport.send_window=2", "coordinator.eval_every_steps=7", "data.train=/elsewhere",
                         "init_from=/some/run"] {
            var c = base
            try c.apply(override: harmless)
            #expect(MathsFingerprint(config: c, dataFingerprint: "abc") == print, "\(harmless) changed the fingerprint")
        }
        // The maths.
        for change in ["seed=2", "deterministic=true", "optimizer.learning_rate=0.5", "optimizer.schedule.warmup_steps=3",
                       "coordinator.global_batch=128", "coordinator.micro_batches=4", "pruning.method=csp",
                       "pruning.schedule.target=0.5", "model.hidden_dim=7", "augmentation.time_masks=1", "coordinator.broadcast_values=f16"] {
            var c = base
            try c.apply(override: change)
            let other = MathsFingerprint(config: c, dataFingerprint: "abc")
            #expect(other.hex != print.hex, "\(change) did not change the fingerprint")
            let key = String(change.split(separator: "=")[0])
            #expect(other.differences(from: print).contains { $0.hasPrefix(key + ":") }, "\(change): \(other.differences(from: print))")
        }
        #expect(MathsFingerprint(config: base, dataFingerprint: "other data").hex != print.hex)
        // The text round-trips, as checkpoints store it.
        #expect(MathsFingerprint(text: print.text) == print && print.digest.count == 32)
    }

    /// `pruning.rho_growth`, `pruning.recover`, `pruning.swaps` and `pruning.restarts` (2026-11-30)
    /// change only some methods: a checkpoint written before them holds none of these keys, which
    /// reads as the old behaviour (`none`, `target`, no swaps, no restarts). Today's defaults are told apart from it, by name, for the methods
    /// they change; another method's fingerprint does not carry the key at all.
    @Test func aKeyAddedLaterSetsApartOnlyTheRunsItChanges() throws {
        let rows = ["csp:activations", "one-shot-reconstruction"]
        let keys = [("pruning.rho_growth", "sparsity", "none", ["admm-magnitude", "csp", "csp:activations"]), ("pruning.recover", "signal", "target", ["csp"]),
                    ("pruning.swaps", "16", "0", rows), ("pruning.restarts", "auto", "0", rows)]
        for method in ["admm-magnitude", "csp", "csp:activations", "gradual-magnitude", "wanda", "one-shot-reconstruction"] {
            var c = try RunConfiguration.load(file: nil)
            let parts = method.split(separator: ":").map(String.init)
            try c.apply(override: "pruning.method=\(parts[0])")
            if parts.count > 1 { try c.apply(override: "pruning.operator=\(parts[1])") }
            let today = MathsFingerprint(config: c, dataFingerprint: "abc")
            let before = MathsFingerprint(text: today.text.split(separator: "\n").filter { line in !keys.contains { line.hasPrefix($0.0 + " ") } }.joined(separator: "\n"))
            var expected: [String] = []
            for (key, now, old, methods) in keys {
                #expect(today.text.contains("\(key) = \(now)") == methods.contains(method), "\(method): \(today.text)")
                if methods.contains(method) { expected.append("\(key): \(now) now, \(old) in the checkpoint") }
                try c.apply(override: "\(key)=\(old)")
            }
            #expect(today.differences(from: before) == expected.sorted(), "\(method)")
            #expect(MathsFingerprint(config: c, dataFingerprint: "abc").differences(from: before).isEmpty, "\(method) with the old settings")
        }
        // csp through the layers' inputs never reads `recover`: a checkpoint that lists it
        // (written between two builds) matches one that does not, whatever its value.
        var c = try RunConfiguration.load(file: nil)
        try c.apply(override: "pruning.method=csp")
        try c.apply(override: "pruning.operator=activations")
        let today = MathsFingerprint(config: c, dataFingerprint: "abc")
        #expect(today.ignored == ["pruning.recover"])
        c.pruning.method = .gradualMagnitude
        #expect(MathsFingerprint(config: c, dataFingerprint: "abc").ignored == ["pruning.recover", "pruning.swaps", "pruning.restarts", "pruning.rho_growth"])
        for value in ["signal", "target"] {
            let listed = MathsFingerprint(text: today.text + "\npruning.recover = \(value)")
            #expect(today.differences(from: listed).isEmpty && listed.differences(from: today).isEmpty, "recover \(value)")
        }
    }

    /// `model.dropout` (2026-11-30): a checkpoint written before it holds no such key and was
    /// computed without dropout, so it resumes under the default; a run with dropout is told apart.
    @Test func dropoutIsAMathsSettingThatOldCheckpointsLackAsZero() throws {
        var c = try RunConfiguration.load(file: nil)
        let today = MathsFingerprint(config: c, dataFingerprint: "abc")
        let before = MathsFingerprint(text: today.text.split(separator: "\n").filter { !$0.hasPrefix("model.dropout ") }.joined(separator: "\n"))
        #expect(today.text.contains("model.dropout = "), "\(today.text)")
        #expect(today.differences(from: before).isEmpty, "\(today.differences(from: before))")
        try c.apply(override: "model.dropout=0")
        #expect(MathsFingerprint(config: c, dataFingerprint: "abc") == today, "0 is written as the default is")
        try c.apply(override: "model.dropout=0.2")
        #expect(c.model.dropout == 0.2)
        #expect(MathsFingerprint(config: c, dataFingerprint: "abc").differences(from: before) == ["model.dropout: 0.2 now, 0.0 in the checkpoint"])
        for bad in ["1", "-0.1", "1.5"] {
            let error = #expect(throws: ConfigError.self) { try RunConfiguration.load(file: nil, overrides: ["model.dropout=\(bad)"]) }
            #expect(error?.key == "model.dropout" && error?.description.contains("[0, 1)") == true, "\(bad): \(String(describing: error))")
        }
        // data.valid_seen is a path: where the data are, not what they are.
        try c.apply(override: "data.valid_seen=/somewhere/valid_seen")
        #expect(c.data.validSeen == "/somewhere/valid_seen")
        #expect(!MathsFingerprint(config: c, dataFingerprint: "abc").text.contains("valid_seen"))
    }
}
