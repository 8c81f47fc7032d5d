import ArgumentParser
import Checkpoints
import Configuration
import Experiments
import FileIO
import Foundation
import Plots
import Pruning
import Runtime
import Wire
import Speech
import Tasks
import Tensors

struct ExperimentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "experiment",
        abstract: "Run experiments made of many training runs.",
        subcommands: [PruningSweep.self]
    )
}

/// `csptrain experiment pruning`: every method at every target from one dense model, scored on
/// the test split. The shell around the pure plan and report of the Experiments module: it
/// launches runs as child processes (`csptrain launch`), scores their checkpoints, and rewrites
/// the results after every run, so a sweep can be stopped and resumed at any point.
struct PruningSweep: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pruning",
        abstract: "Compare pruning methods at several target sparsities from one dense model.",
        discussion: """
        Writes OUT/results.json (one record per method and target), OUT/results.md (the table, WER \
        against dense, CSP's paired-bootstrap intervals against gradual and ADMM magnitude pruning) \
        and OUT/wer-vs-sparsity.svg. Each run lives in OUT/runs/<method>-<percent>; a run that \
        completed with the same configuration is reused, so running the command again continues a \
        sweep that was stopped. Settings: Configs/experiment-pruning.yaml (full) and \
        Configs/experiment-smoke.yaml (minutes).
        """
    )

    @Option(help: ArgumentHelp("Experiment settings (YAML).", valueName: "file")) var config: String
    @Option(help: ArgumentHelp("Output folder.", valueName: "dir")) var out: String
    @Option(help: ArgumentHelp("The trained dense model (overrides dense_checkpoint in the settings).", valueName: "path"))
    var denseCheckpoint: String?
    @Option(help: ArgumentHelp("Run only these methods this time (comma-separated); the report covers every finished run.", valueName: "list"))
    var only: String?

    func run() throws {
        BLASRuntime.useBestKernels()
        ProcessTuning.keepLargeBuffersMapped()
        let settings: PruningExperimentSettings
        do {
            settings = try PruningExperimentSettings.parse(yaml: try String(contentsOfFile: config, encoding: .utf8), source: config)
        } catch let e as ExperimentError {
            throw ValidationError(e.description)
        } catch {
            throw ValidationError("cannot read \(config): \(error.localizedDescription)")
        }
        let outURL = URL(fileURLWithPath: out).standardizedFileURL
        try FileManager.default.createDirectory(at: outURL.appendingPathComponent("runs"), withIntermediateDirectories: true)
        let sweep = Sweep(settings: settings, out: outURL, configFile: config)
        for path in [settings.test, settings.testChannel] where !FileManager.default.fileExists(atPath: path) {
            throw ValidationError("""
            test manifest \(path.isEmpty ? "(test / test_channel not set in \(config))" : path) not found: make a test split with \
            `csptrain data synth --out DIR --test-utterances 600` (the training set stays the same) and point test and \
            test_channel at DIR/test.jsonl and DIR/test_channel.jsonl
            """)
        }
        let dense = try sweep.denseCheckpoint(override: denseCheckpoint)
        let chosen = only.map { Set($0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }) }
        if let chosen, let unknown = chosen.first(where: { !settings.methods.contains($0) }) {
            throw ValidationError("--only \(unknown): not among the settings' methods (\(settings.methods.joined(separator: ", ")))")
        }
        let plan = PruningExperimentPlan.runs(settings, denseCheckpoint: dense.path)
        SweepSignals.install()
        try sweep.scoreDense(dense)
        var failures: [String] = []
        for run in plan where chosen?.contains(run.method) ?? true {
            do {
                if SweepSignals.received != 0 { throw SweepInterrupted(description: "interrupted; run the same command again to continue") }
                try sweep.execute(run)
            } catch let e as SweepInterrupted {
                try sweep.writeReport(plan: plan, dense: dense)
                log(e.description)
                throw ExitCode(130)
            } catch {
                failures.append("\(run.name): \(error)")
                log("\(run.name) failed: \(error)")
            }
            try sweep.writeReport(plan: plan, dense: dense)
        }
        try sweep.writeReport(plan: plan, dense: dense)
        log("results: \(outURL.appendingPathComponent("results.md").path)")
        if !failures.isEmpty {
            log("\(failures.count) run(s) failed (their logs are in \(outURL.path)/runs/):\n" + failures.joined(separator: "\n"))
            throw ExitCode.failure
        }
    }
}

private func log(_ message: String) {
    let time = ISO8601DateFormatter().string(from: Date())
    StandardError.write("\(time) experiment: \(message)\n")
}

struct SweepInterrupted: Error, CustomStringConvertible {
    let description: String
}

/// Ctrl-C and SIGTERM while a run trains: the run gets the signal (it writes a final checkpoint
/// and exits), the sweep writes its report and stops. Handlers, not SIG_IGN, so children start
/// with the default dispositions.
enum SweepSignals {
    nonisolated(unsafe) static var child: pid_t = 0
    nonisolated(unsafe) static var received: sig_atomic_t = 0

    static func install() {
        for sig in [SIGINT, SIGTERM] {
            signal(sig) { s in
                SweepSignals.received = s
                if SweepSignals.child > 0, s == SIGTERM { kill(SweepSignals.child, SIGTERM) }
            }
        }
    }
}

/// The files of one sweep and the steps that produce them.
struct Sweep {
    let settings: PruningExperimentSettings
    let out: URL
    let configFile: String

    var runsFolder: URL { out.appendingPathComponent("runs") }
    func folder(_ name: String) -> URL { runsFolder.appendingPathComponent(name) }
    func scoresFile(_ name: String) -> URL { folder(name).appendingPathComponent("test-scores.json") }

    /// The dense model: given, or trained once into OUT/dense.
    func denseCheckpoint(override: String?) throws -> URL {
        if let path = override ?? (settings.denseCheckpoint.isEmpty ? nil : settings.denseCheckpoint) {
            return try resolveCheckpoint(path)
        }
        let denseFolder = out.appendingPathComponent("dense")
        if let summary = try? readSummary(denseFolder), summary.status == .completed, let c = summary.checkpoint {
            return URL(fileURLWithPath: c)
        }
        guard !settings.denseConfig.isEmpty else {
            throw ValidationError("no dense model: give --dense-checkpoint PATH, or dense_checkpoint or dense_config in \(configFile)")
        }
        try? FileManager.default.removeItem(at: denseFolder)
        log("training the dense reference with \(settings.denseConfig) into \(denseFolder.path)")
        try launch(["--config", settings.denseConfig], folder: denseFolder, logName: "dense.log")
        guard let summary = try? readSummary(denseFolder), summary.status == .completed, let c = summary.checkpoint else {
            throw ValidationError("the dense reference run did not complete: see \(out.path)/dense.log")
        }
        return URL(fileURLWithPath: c)
    }

    func resolveCheckpoint(_ path: String) throws -> URL {
        do { return try CheckpointStore.resolve(path) } catch { throw ValidationError("dense checkpoint: \(error)") }
    }

    /// Runs `csptrain launch` as a child; its output goes to OUT/runs/<name>.log.
    func launch(_ arguments: [String], folder: URL, logName: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
        process.arguments = ["launch", "--workers", String(settings.workers), "--run-dir", folder.path] + arguments
        let logURL = (logName == "dense.log" ? out : runsFolder).appendingPathComponent(logName)
        _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
        let handle = try FileHandle(forWritingTo: logURL)
        defer { try? handle.close() }
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        SweepSignals.child = process.processIdentifier
        process.waitUntilExit()
        SweepSignals.child = 0
        // The run stopped because the user asked (Ctrl-C reaches both processes; SIGTERM to this
        // one is passed on): stop the sweep. Any other ending is that run's failure.
        let signalled = process.terminationReason == .uncaughtSignal && [SIGINT, SIGTERM].contains(process.terminationStatus)
        if process.terminationStatus == 130 || signalled || SweepSignals.received != 0 {
            throw SweepInterrupted(description: "interrupted during \(folder.lastPathComponent); run the same command again to continue")
        }
    }

    func readSummary(_ folder: URL) throws -> RunSummary {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(RunSummary.self, from: Data(contentsOf: RunFolder(folder.path).summaryFile))
    }

    /// The configuration a planned run resolves to, as `launch` would write it.
    func resolvedConfiguration(_ run: PlannedRun) throws -> RunConfiguration {
        var options = try ConfigOptions.parse(["--config", settings.base] + run.overrides.flatMap { ["--set", $0] })
        options.steps = nil
        return try options.resolve(extra: ["coordinator.min_workers=\(settings.workers)"])
    }

    /// Trains (unless a completed run with the same configuration is there) and scores one run.
    func execute(_ run: PlannedRun) throws {
        let folder = self.folder(run.name)
        let wanted = try resolvedConfiguration(run)
        if let summary = try? readSummary(folder), summary.status == .completed,
           let text = try? String(contentsOf: RunFolder(folder.path).configFile, encoding: .utf8),
           let existing = try? RunConfiguration.parse(yaml: text, source: folder.path), existing == wanted {
            if let scores = readScores(scoresFile(run.name)), scores.matches(checkpoint: summary.checkpoint, settings: settings) { return }
            log("\(run.name): reusing the completed run; scoring it")
        } else {
            if FileManager.default.fileExists(atPath: folder.path) {
                log("\(run.name): the run there did not complete or has another configuration; starting it again")
                try FileManager.default.removeItem(at: folder)
            }
            log("\(run.name): training \(settings.steps) steps")
            try launch(["--config", settings.base] + run.overrides.flatMap { ["--set", $0] }, folder: folder, logName: "\(run.name).log")
            guard let summary = try? readSummary(folder), summary.status == .completed else {
                throw ExperimentError("the run did not complete (see \(runsFolder.path)/\(run.name).log)")
            }
        }
        let summary = try readSummary(folder)
        guard let checkpoint = summary.checkpoint else { throw ExperimentError("the run wrote no checkpoint") }
        try score(checkpoint: URL(fileURLWithPath: checkpoint), into: scoresFile(run.name))
    }

    func scoreDense(_ checkpoint: URL) throws {
        let file = runsFolder.appendingPathComponent("dense").appendingPathComponent("test-scores.json")
        if let scores = readScores(file), scores.matches(checkpoint: checkpoint.path, settings: settings) { return }
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        try score(checkpoint: checkpoint, into: file)
    }

    struct Scores: Codable {
        var checkpoint: String
        /// The manifests scored, with their sizes: scores of other test sets are not reused.
        var test: [String]
        var clean: UtteranceScores
        var channel: UtteranceScores
        var seconds: Double

        static func testSets(_ settings: PruningExperimentSettings) -> [String] {
            [settings.test, settings.testChannel].map { path in
                let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? -1
                return "\(URL(fileURLWithPath: path).standardizedFileURL.path) (\(size) bytes)"
            }
        }

        func matches(checkpoint path: String?, settings: PruningExperimentSettings) -> Bool {
            path.map { URL(fileURLWithPath: $0).standardizedFileURL.path } == URL(fileURLWithPath: checkpoint).standardizedFileURL.path
                && test == Self.testSets(settings)
        }
    }

    /// Scores a checkpoint on both test sets at once (one thread each) and keeps every
    /// utterance's counts for the paired bootstrap.
    func score(checkpoint: URL, into file: URL) throws {
        let evaluator = try EvalCommand.loadEvaluator(checkpoint.path)
        let sets = [try Manifest.read(settings.test), try Manifest.read(settings.testChannel)]
        let start = Date()
        let results = ResultSlots(count: 2)
        DispatchQueue.concurrentPerform(iterations: 2) { i in results.set(i, evaluator.evaluate(sets[i])) }
        let seconds = Date().timeIntervalSince(start)
        func scores(_ r: SpeechEvaluator.Result) -> UtteranceScores {
            UtteranceScores(wordEdits: r.perUtterance.map(\.wordEdits), words: r.perUtterance.map(\.words),
                            characterEdits: r.perUtterance.map(\.characterEdits), characters: r.perUtterance.map(\.characters))
        }
        let clean = scores(results.get(0)), channel = scores(results.get(1))
        log("\(file.deletingLastPathComponent().lastPathComponent): test WER \(String(format: "%.2f", 100 * clean.wer))% clean, \(String(format: "%.2f", 100 * channel.wer))% channel (\(String(format: "%.0f", seconds)) s)")
        let data = try JSONEncoder().encode(Scores(checkpoint: checkpoint.path, test: Scores.testSets(settings), clean: clean, channel: channel, seconds: seconds))
        try data.write(to: file, options: .atomic)
    }

    func readScores(_ file: URL) -> Scores? {
        guard let data = try? Data(contentsOf: file) else { return nil }
        return try? JSONDecoder().decode(Scores.self, from: data)
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
        for run in plan {
            guard let scores = readScores(scoresFile(run.name)), let summary = try? readSummary(folder(run.name)),
                  var r = try? record(method: run.method, target: run.target, name: run.name,
                                      checkpoint: URL(fileURLWithPath: scores.checkpoint), scores: scores, summary: summary) else {
                missing.append(run.name)
                continue
            }
            scoresByRun[run.name] = scores
            r.setIntervals(scores, samples: settings.bootstrapSamples)
            computeSeconds += r.wallSeconds + r.evalSeconds
            results.append(r)
        }
        // CSP against its two baselines, utterance by utterance.
        for i in results.indices where results[i].method == "csp" {
            let pct = Int((results[i].targetSparsity * 100).rounded())
            guard let csp = scoresByRun["csp-\(pct)"] else { continue }
            func compare(_ baseline: String) -> PruningResult.Comparison? {
                guard let b = scoresByRun["\(baseline)-\(pct)"], b.clean.words == csp.clean.words, b.channel.words == csp.channel.words else { return nil }
                return .init(clean: PairedDifference(csp.clean, b.clean, samples: settings.bootstrapSamples),
                             channel: PairedDifference(csp.channel, b.channel, samples: settings.bootstrapSamples))
            }
            results[i].deltaWerVsGradual = compare("gradual-magnitude")
            results[i].deltaWerVsAdmm = compare("admm-magnitude")
        }
        try PruningReport.json(results).write(to: out.appendingPathComponent("results.json"), options: .atomic)
        try Data(PruningReport.markdown(results, settings: settings, denseCheckpoint: dense.path, computeSeconds: computeSeconds,
                                        missing: missing).utf8).write(to: out.appendingPathComponent("results.md"), options: .atomic)
        let figure = RunFigures.sweep(results.map(PlotCommand.point), order: PruningReport.methodOrder, title: "WER against sparsity")
        try Data(figure.svg().utf8).write(to: out.appendingPathComponent("wer-vs-sparsity.svg"), options: .atomic)
    }

    /// A results.json record from a checkpoint, its test scores and its run's files.
    func record(method: String, target: Double, name: String, checkpoint: URL, scores: Scores, summary: RunSummary?) throws -> PruningResult {
        let ckpt = try CheckpointStore.load(checkpoint)
        let config = try RunConfiguration.parse(yaml: ckpt.configYAML, source: checkpoint.path)
        let evaluator = try EvalCommand.evaluator(ckpt, config: config, url: checkpoint)
        let layout = evaluator.model.layout, values = evaluator.parameters
        // Low-rank layers store their factors: the ranks are in the run's last support update.
        var ranks: [String: Int] = [:]
        if let text = try? String(contentsOf: RunFolder(folder(name).path).pruningFile, encoding: .utf8),
           let last = text.split(separator: "\n").last {
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            if let update = try? decoder.decode(SupportUpdate.self, from: Data(last.utf8)) {
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

/// Results written from concurrent lanes.
final class ResultSlots: @unchecked Sendable {
    private let lock = NSLock()
    private var slots: [SpeechEvaluator.Result?]
    init(count: Int) { slots = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ r: SpeechEvaluator.Result) { lock.lock(); slots[i] = r; lock.unlock() }
    func get(_ i: Int) -> SpeechEvaluator.Result { lock.lock(); defer { lock.unlock() }; return slots[i]! }
}

extension PruningResult {
    /// The run's own WER intervals on the clean and channel test sets (for `csptrain plot`).
    mutating func setIntervals(_ scores: Sweep.Scores, samples: Int) {
        werInterval = BootstrapInterval(scores.clean, samples: samples)
        werChannelInterval = BootstrapInterval(scores.channel, samples: samples)
    }
}
