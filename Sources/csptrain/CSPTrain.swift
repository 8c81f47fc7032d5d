import ArgumentParser
import Configuration
import FileIO
import Foundation
import Logging
import Runtime
import Tensors

@main
struct CSPTrain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "csptrain",
        abstract: "Distributed training of sparse speech-recognition models over nng.",
        discussion: """
        A coordinator shards the training data into micro-batches, workers compute gradients, the \
        coordinator aggregates them, updates and projects the weights, and broadcasts them back.

        Start here:  csptrain launch --workers 2 --steps 200 --run-dir runs/first
        """,
        subcommands: [Launch.self, CoordinatorCommand.self, WorkerCommand.self, DataCommand.self, EvalCommand.self, TranscribeCommand.self,
                      CheckpointCommand.self, ConfigCommand.self, ExperimentCommand.self, PlotCommand.self, Bench.self,
                      CertsCommand.self]
    )

    /// `--resume` takes an optional value (`latest`, `auto` or a path); a bare `--resume` means
    /// `latest`. The argument parser has no optional-value options, so a bare one is completed here.
    static func main() async {
        StandardOutput.ignoreBrokenPipeSignal()
        await main(ResumeOptions.completingBareResume(Array(CommandLine.arguments.dropFirst())))
    }
}

/// `--resume [latest|auto|PATH]` and `--allow-changed-settings`, for `launch` and `coordinator`.
struct ResumeOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Continue the run in --run-dir: `latest` (also a bare --resume) = its newest intact checkpoint, `auto` = resume when there is one and start fresh otherwise (Slurm requeue, restarted pod), or a checkpoint file. --steps stays the run's total; the folder's config.yaml is used unless --config is given.",
        valueName: "latest|auto|path"))
    var resume: String?

    @Flag(help: "Resume even when settings that change the maths (model, data, seed, batch, optimizer, schedules, pruning, deterministic) differ from the checkpoint's.")
    var allowChangedSettings = false

    var request: ResumeRequest { ResumeRequest(argument: resume) }

    static func completingBareResume(_ arguments: [String]) -> [String] {
        var out: [String] = []
        for (i, a) in arguments.enumerated() {
            out.append(a)
            if a == "--resume", i + 1 == arguments.count || arguments[i + 1].hasPrefix("-") { out.append("latest") }
        }
        return out
    }
}

/// `--http`: the coordinator's HTTP endpoint (`observe.http`).
struct ObserveOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Serve the live page, /api/status and Prometheus /metrics on this address (port 0: a free one; the URL is printed and written to <run-dir>/page). Same as --set observe.http=ADDR:PORT.",
        valueName: "addr:port"))
    var http: String?

    var overrides: [String] { http.map { ["observe.http=\($0)"] } ?? [] }
}

/// Options that select and adjust the run configuration.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("YAML run configuration (every key has a default; see `csptrain config dump`).", valueName: "file"))
    var config: String?

    @Option(name: .customLong("set"), help: ArgumentHelp("Override one key, e.g. --set optimizer.learning_rate=0.02 (repeatable).", valueName: "key=value"))
    var overrides: [String] = []

    @Option(help: "The run's total number of steps (overrides `steps`).")
    var steps: Int?

    @Option(help: "Seed for weights, data order and generated data (overrides `seed`).")
    var seed: UInt64?

    /// `source`: where the configuration comes from (default: --config, or the defaults).
    func resolve(extra: [String] = [], source: ConfigOrigin? = nil) throws -> RunConfiguration {
        var sets = overrides
        if let steps { sets.append("steps=\(steps)") }
        if let seed { sets.append("seed=\(seed)") }
        do {
            var resolved = try (source ?? config.map { .file($0) } ?? .defaults).load(overrides: sets + extra)
            // Data folders are given relative to the working directory; workers on other machines
            // receive the configuration, so it carries absolute paths.
            let cwd = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
            for path in [\RunConfiguration.data.train, \.data.valid, \.data.validChannel, \.data.validSeen, \.initFrom, \.transport.tls.dir] where !resolved[keyPath: path].isEmpty {
                resolved[keyPath: path] = URL(fileURLWithPath: resolved[keyPath: path], relativeTo: cwd).standardizedFileURL.path
            }
            return resolved
        } catch let error as ConfigError {
            throw ValidationError(error.description)
        }
    }
}

/// `--tls DIR` and `--require-client-cert`, for `launch` and `coordinator` (YAML: `transport.tls`).
struct TLSOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Certificate folder from `csptrain certs init`: serve tls+tcp:// with coordinator.pem/.key, trusting ca.pem (transport.tls.dir).", valueName: "dir"))
    var tls: String?

    @Flag(help: "Mutual TLS: refuse, at the handshake, workers without a certificate signed by the run's CA (transport.tls.require_client_cert).")
    var requireClientCert = false

    var overrides: [String] {
        (tls.map { ["transport.tls.dir=\($0)"] } ?? []) + (requireClientCert ? ["transport.tls.require_client_cert=true"] : [])
    }
}

struct LogOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    @Option(help: "Log lines as text for a person, or json: one object per line (timestamp, level, label, message, source, file, line and every metadata field) for a log collector.")
    var logFormat: LogFormat = .text

    enum LogFormat: String, ExpressibleByArgument, CaseIterable { case text, json }

    func bootstrap(label: String) -> Logger {
        let level = logLevel
        let format = logFormat
        LoggingSystem.bootstrap { label in
            switch format {
            case .text:
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            case .json:
                return JSONLogHandler(label: label, logLevel: level)
            }
        }
        return Logger(label: label)
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// Prints exactly one JSON object on stdout.
func printJSON(_ text: String) throws {
    try output(text)
}

/// Writes to stdout. A closed pipe (`csptrain ... | head -1`) is an error, reported on stderr
/// with exit status 1, never a signal (SIGPIPE is ignored from the start) or a trap.
func output(_ text: String, terminator: String = "\n") throws {
    try StandardOutput.write(text + terminator)
}

func runExitCode(_ summary: RunSummary) -> ExitCode {
    switch summary.status {
    case .completed: .success
    case .interrupted: ExitCode(130)
    case .failed: .failure
    }
}

// MARK: launch

struct Launch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a coordinator and N workers on this machine.",
        discussion: """
        Writes the resolved config.yaml, metrics.jsonl (one line per step), summary.json, a token \
        (mode 0600), worker logs, checkpoints and the ledger (which examples each step used) into \
        the run folder. Ctrl-C or SIGTERM stops cleanly with a final checkpoint; \
        `--resume` continues from the newest intact one, with any number of workers. Exits 0 \
        only when the run completed.
        """
    )

    @Option(help: "Worker processes to start.")
    var workers = 2

    @Option(help: ArgumentHelp("Run folder (created; must not hold an earlier run's checkpoints unless --resume).", valueName: "dir"))
    var runDir: String

    @Option(help: ArgumentHelp("Address the coordinator listens on (port 0: a free port). With --tls: tls+tcp://127.0.0.1:0 by default.", valueName: "url"))
    var listen: String?

    @OptionGroup var tlsOptions: TLSOptions

    @Flag(help: "Print the run summary as one JSON object on stdout (progress and logs go to stderr).")
    var json = false

    @OptionGroup var observeOptions: ObserveOptions

    @OptionGroup var resumeOptions: ResumeOptions
    @OptionGroup var configOptions: ConfigOptions
    @OptionGroup var logOptions: LogOptions

    func validate() throws {
        guard workers >= 1 else { throw ValidationError("--workers must be at least 1") }
    }

    func run() async throws {
        BLASRuntime.useBestKernels()
        ProcessTuning.keepLargeBuffersMapped()
        let logger = logOptions.bootstrap(label: "csptrain.launch")
        // Steps begin once every launched worker has joined, so all of them take part.
        let summary: RunSummary
        do {
            let folder = RunFolder(runDir)
            let source = try CoordinatorSetup.configSource(explicit: configOptions.config, folder: folder, resume: resumeOptions.request)
            let config = try configOptions.resolve(extra: ["coordinator.min_workers=\(workers)"] + tlsOptions.overrides + observeOptions.overrides,
                                                   source: source)
            var options = Launcher.Options(workers: workers, folder: folder, config: config)
            options.listen = listen ?? (config.transport.tls.dir.isEmpty ? "tcp://127.0.0.1:0" : "tls+tcp://127.0.0.1:0")
            options.resume = resumeOptions.request
            options.allowChangedSettings = resumeOptions.allowChangedSettings
            options.workerArguments = ["--log-format", logOptions.logFormat.rawValue]
            // Every stderr line is a JSON object then: no progress lines between them.
            options.showProgress = logOptions.logFormat == .text
            summary = try await Launcher(options: options, logger: logger).run()
        } catch {
            logger.error("\(error)")
            if json { try? printJSON(jsonObject(["status": "failed", "error": "\(error)"])) }
            throw ExitCode.failure
        }
        // With --log-format json the coordinator's "run completed" line says it.
        if json { try printJSON(summary.json(pretty: false)) } else if logOptions.logFormat == .text { report(summary) }
        throw runExitCode(summary)
    }

    private func report(_ s: RunSummary) {
        let loss = { (v: Double?) in v.map { String(format: "%.4f", $0) } ?? "-" }
        var lines = ["run \(s.status.rawValue): \(s.steps) steps in \(String(format: "%.1f", s.wallSeconds)) s, loss \(loss(s.firstLoss)) → \(loss(s.finalLoss)), workers seen \(s.workersSeen), failed \(s.workersFailed)"]
        if let c = s.checkpoint { lines.append("checkpoint: \(c)") }
        if let validation = s.validationLine { lines.append(validation) }
        if let m = s.message { lines.append(m) }
        lines.append("summary: \(RunFolder(runDir).summaryFile.path)")
        StandardError.write(lines.joined(separator: "\n") + "\n")
    }
}

// MARK: coordinator

struct CoordinatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Run the coordinator: workers join it over nng and train together.",
        discussion: """
        The run token is read from --token-file or the CSPTRAIN_TOKEN environment variable, never \
        from the command line. Without either, a new token is written to <run-dir>/token (mode 0600): \
        give that file to the workers. The bound address is written to <run-dir>/endpoint.
        """
    )

    @Option(help: ArgumentHelp("Address to listen on: tcp://host:port or tls+tcp://host:port (port 0: a free one), or ipc:///path.", valueName: "url"))
    var listen: String

    @OptionGroup var tlsOptions: TLSOptions

    @Option(help: ArgumentHelp("Run folder.", valueName: "dir"))
    var runDir: String

    @Option(help: ArgumentHelp("File holding the run token.", valueName: "file"))
    var tokenFile: String?

    @Flag(help: "Print the run summary as one JSON object on stdout.")
    var json = false

    @OptionGroup var observeOptions: ObserveOptions
    @OptionGroup var resumeOptions: ResumeOptions
    @OptionGroup var configOptions: ConfigOptions
    @OptionGroup var logOptions: LogOptions

    func run() async throws {
        BLASRuntime.useBestKernels()
        ProcessTuning.keepLargeBuffersMapped()
        let logger = logOptions.bootstrap(label: "csptrain.coordinator")
        let folder = RunFolder(runDir)
        let summary: RunSummary
        do {
            let request = resumeOptions.request
            let source = try CoordinatorSetup.configSource(explicit: configOptions.config, folder: folder, resume: request)
            let config = try configOptions.resolve(extra: tlsOptions.overrides + observeOptions.overrides, source: source)
            var startup = CoordinatorStartup.Request(folder: folder, config: config, listen: listen)
            startup.resume = request
            startup.allowChangedSettings = resumeOptions.allowChangedSettings
            startup.tokenFile = tokenFile
            let started = try await CoordinatorStartup.start(startup, logger: logger)
            defer { started.hold() }
            started.commit()
            let service = started.service
            let trap = SignalTrap { sig in
                service.stop(.interrupted, message: "stopped by \(sig == SIGINT ? "SIGINT" : "SIGTERM")")
            }
            summary = await service.run()
            trap.cancel()
        } catch {
            logger.error("\(error)")
            if json { try? printJSON(jsonObject(["status": "failed", "error": "\(error)"])) }
            throw ExitCode.failure
        }
        if json { try printJSON(summary.json(pretty: false)) }
        throw runExitCode(summary)
    }
}

// MARK: worker

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Join a coordinator and compute gradients until the run ends.",
        discussion: "Reconnects by itself when the coordinator restarts. The token comes from --token-file or CSPTRAIN_TOKEN."
    )

    @Option(help: ArgumentHelp("The coordinator's address (see <run-dir>/endpoint): tcp://host:port, or tls+tcp://host:port with --tls.", valueName: "url"))
    var connect: String

    @Option(help: ArgumentHelp("Certificate folder from `csptrain certs init` (ca.pem; worker.pem/worker.key for mutual TLS). Needed for tls+tcp://.", valueName: "dir"))
    var tls: String?

    @Option(help: ArgumentHelp("File holding the run token.", valueName: "file"))
    var tokenFile: String?

    @Option(help: "Name shown in the coordinator's logs (default: host-pid).")
    var name: String?

    @Option(help: "Give up after this many seconds without an answer from the coordinator.")
    var patience: Double = 120

    @Option(name: .customLong("data"), help: ArgumentHelp(
        "Where this machine keeps a data set, when not where the coordinator's configuration says (repeatable): train=DIR, valid=DIR, valid_channel=DIR or valid_seen=DIR. The data must be a copy of the coordinator's: its fingerprint is checked.",
        valueName: "set=dir"))
    var data: [String] = []

    @Flag(help: "Print how the worker ended as one JSON object on stdout.")
    var json = false

    @OptionGroup var logOptions: LogOptions

    func validate() throws {
        for entry in data {
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, ["train", "valid", "valid_channel", "valid_seen"].contains(parts[0]), !parts[1].isEmpty else {
                throw ValidationError("--data \(entry): expected train=DIR, valid=DIR, valid_channel=DIR or valid_seen=DIR")
            }
        }
    }

    func run() async throws {
        BLASRuntime.useBestKernels()
        ProcessTuning.keepLargeBuffersMapped()
        ParentWatch.installIfLaunched()
        let logger = logOptions.bootstrap(label: "csptrain.worker")
        do {
            let token = try RunToken.load(file: tokenFile)
            var options = WorkerService.Options(connect: connect, token: token,
                                                name: name ?? "\(ProcessInfo.processInfo.hostName)-\(getpid())")
            options.patienceSeconds = patience
            // A worker process of its own may start itself again when nng is stuck for good.
            options.restartInPlaceWhenStuck = true
            options.tlsDir = tls.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
            for entry in data {
                let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
                options.dataFolders[parts[0]] = URL(fileURLWithPath: parts[1]).standardizedFileURL.path
            }
            let worker = try WorkerService(options: options, logger: logger)
            let exit = try await worker.run()
            await worker.close()
            if json, case let .finished(reason) = exit {
                try printJSON(jsonObject(["status": "finished", "reason": reason]))
            }
        } catch {
            logger.error("\(error)")
            if json { try? printJSON(jsonObject(["status": "failed", "error": "\(error)"])) }
            throw ExitCode.failure
        }
    }
}

/// A flat JSON object from string values.
func jsonObject(_ fields: [String: String]) -> String {
    let data = (try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])) ?? Data("{}".utf8)
    return String(decoding: data, as: UTF8.self)
}

// MARK: config

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Inspect run configurations.",
        subcommands: [Dump.self]
    )

    struct Dump: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the resolved configuration: defaults, then the file, then --set and flags."
        )
        @OptionGroup var configOptions: ConfigOptions
        @Flag(help: "Print one JSON object instead of YAML.")
        var json = false

        func run() throws {
            let config: RunConfiguration
            do { config = try configOptions.resolve() } catch {
                if json { try? printJSON(jsonObject(["status": "failed", "error": "\(error)"])) }
                throw error
            }
            if json {
                try printJSON(config.jsonText())
            } else {
                try output(config.yamlText(), terminator: "")
            }
        }
    }
}
