import ArgumentParser
import Checkpoints
import Configuration
import Experiments
import FileIO
import Foundation
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
            `csptrain data synth --out DIR --test-utterances 600` and the training corpus's --recipe and --seed (the main \
            job's: --recipe 1 --seed 1; the training set stays the same) and point test and test_channel at DIR/test.jsonl \
            and DIR/test_channel.jsonl
            """)
        }
        let dense = try sweep.denseCheckpoint(override: denseCheckpoint)
        let chosen = only.map { Set($0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }) }
        if let chosen, let unknown = chosen.first(where: { !settings.methods.contains($0) }) {
            throw ValidationError("--only \(unknown): not among the settings' methods (\(settings.methods.joined(separator: ", ")))")
        }
        SweepSignals.install()
        try sweep.scoreDense(dense)
        var failures: [String] = []
        // Plan again after every run: a tuned method's other targets, and the extra seeds of the
        // best baseline, enter the plan once the runs they depend on have been validated.
        var attempted = Set<String>()
        var plan = sweep.plan(dense: dense)
        while let run = plan.first(where: { !attempted.contains($0.name) && (chosen?.contains($0.method) ?? true) }) {
            attempted.insert(run.name)
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
            plan = sweep.plan(dense: dense)
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
           let existing = try? RunConfiguration.parse(yaml: text, source: folder.path), existing == wanted,
           computedAlike(wanted, checkpoint: summary.checkpoint) {
            if let scores = readScores(scoresFile(run.name)), scores.matches(checkpoint: summary.checkpoint, settings: settings) { return }
            log("\(run.name): reusing the completed run; scoring it")
        } else {
            if FileManager.default.fileExists(atPath: folder.path) {
                log("\(run.name): the run there did not complete or has another configuration; starting it again")
                try FileManager.default.removeItem(at: folder)
            }
            let steps = run.snapshots == nil ? settings.steps : PruningExperimentPlan.snapshotRunSteps(settings)
            log("\(run.name): training \(steps) steps")
            try launch(["--config", settings.base] + run.overrides.flatMap { ["--set", $0] }, folder: folder, logName: "\(run.name).log")
            guard let summary = try? readSummary(folder), summary.status == .completed else {
                throw ExperimentError("the run did not complete (see \(runsFolder.path)/\(run.name).log)")
            }
        }
        let summary = try readSummary(folder)
        guard let checkpoint = summary.checkpoint else { throw ExperimentError("the run wrote no checkpoint") }
        let scored = readScores(scoresFile(run.name))?.matches(checkpoint: checkpoint, settings: settings) ?? false
        if !scored { try score(checkpoint: URL(fileURLWithPath: checkpoint), into: scoresFile(run.name)) }
        // "One run, every size": each snapshot the run kept, scored as a run per target is.
        let store = CheckpointStore(runDirectory: folder)
        for size in run.snapshots ?? [] {
            let snapshot = store.snapshotPath(sparsity: size), file = snapshotScoresFile(run.name, size)
            guard FileManager.default.fileExists(atPath: snapshot.path) else { throw ExperimentError("the run kept no snapshot at \(size): \(snapshot.path) is missing") }
            if let scores = readScores(file), scores.matches(checkpoint: snapshot.path, settings: settings) { continue }
            try score(checkpoint: snapshot, into: file, label: "\(run.name), the snapshot at \(Int((size * 100).rounded()))%")
        }
    }

    /// True when the run's final checkpoint was computed with the maths `wanted` asks for. Its
    /// config.yaml alone cannot tell: read by a newer build, a key the run was written without
    /// takes today's default, which need not be what the run computed with (`pruning.rho_growth`
    /// before 2026-11-30). The checkpoint's own list of settings can.
    func computedAlike(_ wanted: RunConfiguration, checkpoint: String?) -> Bool {
        guard let checkpoint else { return false }
        let saved: Checkpoint
        do { saved = try CheckpointStore.load(URL(fileURLWithPath: checkpoint)) } catch {
            log("the completed run's checkpoint \(checkpoint) cannot be read (\(error)); the run is done again")
            return false
        }
        let differences = MathsFingerprint(config: wanted, dataFingerprint: "")
            .differences(from: MathsFingerprint(text: saved.mathsSettings))
            .filter { !$0.hasPrefix("data.content:") }
        if !differences.isEmpty { log("the completed run at \(checkpoint) was computed with other maths: \(differences.joined(separator: "; "))") }
        return differences.isEmpty
    }

    func snapshotScoresFile(_ name: String, _ size: Double) -> URL {
        folder(name).appendingPathComponent("test-scores-snapshot-\(Int((size * 100).rounded())).json")
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
    func score(checkpoint: URL, into file: URL, label: String? = nil) throws {
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
        log("\(label ?? file.deletingLastPathComponent().lastPathComponent): test WER \(String(format: "%.2f", 100 * clean.wer))% clean, \(String(format: "%.2f", 100 * channel.wer))% channel (\(String(format: "%.0f", seconds)) s)")
        let data = try JSONEncoder().encode(Scores(checkpoint: checkpoint.path, test: Scores.testSets(settings), clean: clean, channel: channel, seconds: seconds))
        try data.write(to: file, options: .atomic)
    }

    func readScores(_ file: URL) -> Scores? {
        guard let data = try? Data(contentsOf: file) else { return nil }
        return try? JSONDecoder().decode(Scores.self, from: data)
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
