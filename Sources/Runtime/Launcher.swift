import Checkpoints
import Configuration
import FileIO
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// `csptrain launch`: a coordinator in this process and N worker processes on this machine.
public final class Launcher: Sendable {
    public struct Options: Sendable {
        public var workers: Int
        public var folder: RunFolder
        public var config: RunConfiguration
        /// Where the coordinator listens; port 0 picks a free port.
        public var listen = "tcp://127.0.0.1:0"
        public var showProgress = true
        /// Continue the run in `folder` from a checkpoint (`--resume`).
        public var resume = ResumeRequest.no
        /// Resume even when settings that change the maths differ from the checkpoint's.
        public var allowChangedSettings = false
        /// Extra arguments for every worker process (`--log-format json`).
        public var workerArguments: [String] = []
        public init(workers: Int, folder: RunFolder, config: RunConfiguration) {
            self.workers = workers
            self.folder = folder
            self.config = config
        }
    }

    let options: Options
    let logger: Logger

    public init(options: Options, logger: Logger) {
        self.options = options
        self.logger = logger
    }

    public func run() async throws -> RunSummary {
        let folder = options.folder
        let display = ProgressDisplay(enabled: options.showProgress)
        var request = CoordinatorStartup.Request(folder: folder, config: options.config, listen: options.listen)
        request.resume = options.resume
        request.allowChangedSettings = options.allowChangedSettings
        request.progress = display.handle
        let started = try await CoordinatorStartup.start(request, logger: logger)
        defer { started.hold() }
        let coordinator = started.service
        let url = started.url
        if let page = coordinator.pageURL { logger.notice("live page: \(page)  (Prometheus: \(page)metrics)") }
        // Workers on this machine read the token from a file: the run folder's, or the one given.
        let tokenFile: String
        if let file = started.tokenFile { tokenFile = file } else {
            do { tokenFile = try folder.writeNewToken().path } catch {
                started.abandon()
                throw error
            }
        }

        let signals = SignalTrap { signal in
            display.finishLine()
            self.logger.notice("\(signal == SIGINT ? "Ctrl-C" : "SIGTERM"): stopping after writing a checkpoint")
            coordinator.stop(.interrupted, message: "stopped by \(signal == SIGINT ? "SIGINT" : "SIGTERM")")
        }
        defer { signals.cancel() }

        let children: [Process]
        do {
            children = try (0 ..< options.workers).map { i in try spawnWorker(index: i, url: url, tokenFile: tokenFile) }
        } catch {
            started.abandon()
            throw error
        }
        started.commit()
        let watcher = Task {
            // If every worker process died, nobody is left to finish the run.
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(200))
                if children.allSatisfy({ !$0.isRunning }) {
                    let codes = children.map { String($0.terminationStatus) }.joined(separator: ", ")
                    coordinator.stop(.failed, message: "all \(children.count) worker processes exited (status \(codes)) before the run completed; see \(folder.logsFolder.path)/worker-*.log")
                    return
                }
            }
        }
        let summary = await coordinator.run()
        watcher.cancel()
        display.finishLine()
        // Workers exit by themselves when told the run is over; make sure none lingers.
        let deadline = Date().addingTimeInterval(5)
        while children.contains(where: \.isRunning), Date() < deadline { try? await Task.sleep(for: .milliseconds(50)) }
        for child in children where child.isRunning { child.terminate() }
        return summary
    }

    private func spawnWorker(index: Int, url: String, tokenFile: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.executablePath)
        // A launched worker's coordinator is its parent: while that runs, a silent coordinator
        // is a busy one (a one-shot reconstruction of the speech model's layers took 6 minutes
        // on a loaded machine, past the default patience of 120 s, and both workers gave up),
        // and when it ends, ParentWatch ends the worker. So patience does not apply here.
        process.arguments = ["worker", "--connect", url, "--token-file", tokenFile, "--name", "worker-\(index)",
                             "--patience", "86400"] + options.workerArguments
        let tls = options.config.transport.tls.dir
        if !tls.isEmpty { process.arguments! += ["--tls", tls] }
        var environment = ProcessInfo.processInfo.environment
        environment[ParentWatch.environmentVariable] = String(getpid())
        process.environment = environment
        let handle = try options.folder.openLog("worker-\(index).log")
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        defer { try? handle.close() }  // the child holds its own copy
        do { try process.run() } catch {
            throw RunFolderError("cannot start worker \(index) (\(Self.executablePath)): \(error.localizedDescription)")
        }
        return process
    }

    /// This executable, to start workers from.
    public static var executablePath: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }
}

/// Where a run starts: step 0, or a checkpoint.
public enum RunStart: Sendable {
    case fresh
    case resume(Checkpoint, url: URL, allowChangedSettings: Bool)

    /// A resumed run keeps its run id.
    public var runID: String? {
        if case let .resume(checkpoint, _, _) = self, !checkpoint.runID.isEmpty { return checkpoint.runID }
        return nil
    }
}

/// What `--resume` asked for.
public enum ResumeRequest: Sendable, Equatable {
    /// No `--resume`: a new run; a folder holding checkpoints is refused.
    case no
    /// `--resume` or `--resume latest`: the newest intact checkpoint; an error when there is none.
    case latest
    /// `--resume auto`: resume when there is a checkpoint, start fresh otherwise (a Slurm requeue,
    /// a restarted pod).
    case auto
    /// `--resume PATH`: that checkpoint file.
    case path(String)

    public init(argument: String?) {
        switch argument {
        case nil: self = .no
        case "", "latest"?: self = .latest
        case "auto"?: self = .auto
        case let p?: self = .path(p)
        }
    }

    public var isResume: Bool { self != .no }
}

/// A run configuration's origin: a file, text carried by a checkpoint, or the defaults.
public enum ConfigOrigin: Sendable, Equatable {
    case defaults
    case file(String)
    case text(String, source: String)

    public func load(overrides: [String]) throws -> RunConfiguration {
        switch self {
        case .defaults: try RunConfiguration.load(file: nil, overrides: overrides)
        case let .file(path): try RunConfiguration.load(file: path, overrides: overrides)
        case let .text(text, source): try RunConfiguration.load(text: text, source: source, overrides: overrides)
        }
    }
}

/// Checks shared by `launch` and `coordinator` before a run starts.
public enum CoordinatorSetup {
    /// Decides where the run starts (call with the folder created and locked). Broken checkpoints
    /// are reported and skipped for the previous one. The coordinator writes the resolved
    /// `config.yaml` once it has accepted the start (a refused resume leaves the folder as it was).
    public static func start(folder: RunFolder, config: RunConfiguration, resume: ResumeRequest,
                             allowChangedSettings: Bool, logger: Logger) throws -> RunStart {
        let store = CheckpointStore(runDirectory: folder.url)
        let start: RunStart
        switch resume {
        case .no:
            if !store.steps().isEmpty {
                throw RunFolderError("the run folder \(folder.url.path) already holds checkpoints (\(store.directory.path)); pass --resume to continue that run, or choose a new --run-dir")
            }
            start = .fresh
        case .latest, .auto:
            var broken: [String] = []
            let found = store.newestIntact { error in
                broken.append("\(error)")
                logger.warning("checkpoint unusable, trying an older one: \(error)")
            }
            if let (checkpoint, url) = found {
                if !broken.isEmpty { logger.warning("resuming from \(url.lastPathComponent), the newest intact checkpoint") }
                start = .resume(checkpoint, url: url, allowChangedSettings: allowChangedSettings)
            } else if !broken.isEmpty {
                throw RunFolderError("no intact checkpoint in \(store.directory.path):\n  " + broken.joined(separator: "\n  "))
            } else if resume == .auto {
                logger.info("--resume auto: no checkpoint in \(store.directory.path); starting a new run")
                start = .fresh
            } else {
                throw RunFolderError("--resume: there is no checkpoint in \(store.directory.path) to resume from; start the run without --resume (or use --resume auto, which starts fresh when there is none)")
            }
        case let .path(path):
            let url = try resolveCheckpoint(path)
            start = .resume(try CheckpointStore.load(url), url: url, allowChangedSettings: allowChangedSettings)
        }
        if case let .resume(checkpoint, url, _) = start {
            guard checkpoint.step <= config.steps else {
                throw RunFolderError("the checkpoint \(url.path) is at step \(checkpoint.step), past this run's total of steps (\(config.steps)); --steps is the run's total, not steps to add")
            }
            logger.notice("resuming from \(url.path)", metadata: ["step": "\(checkpoint.step)", "of": "\(config.steps)"])
        }
        return start
    }

    /// `--resume PATH`: a checkpoint file, a `latest` pointer, or a run folder (its `latest`).
    public static func resolveCheckpoint(_ path: String) throws -> URL {
        do { return try CheckpointStore.resolve(path) } catch { throw RunFolderError("--resume \(path): \(error)") }
    }

    /// Where a start's configuration comes from: `--config` when given; when resuming without
    /// it, the run folder's `config.yaml` (the interrupted run's resolved configuration), else
    /// the configuration inside the checkpoint to resume from (as text: errors name the checkpoint).
    public static func configSource(explicit: String?, folder: RunFolder, resume: ResumeRequest) throws -> ConfigOrigin {
        if let explicit { return .file(explicit) }
        if resume.isResume, FileManager.default.fileExists(atPath: folder.configFile.path) { return .file(folder.configFile.path) }
        var source: URL?
        switch resume {
        case .no: return .defaults
        case let .path(path): source = try resolveCheckpoint(path)
        case .latest, .auto: source = CheckpointStore(runDirectory: folder.url).newestIntact()?.url
        }
        guard let source else { return .defaults }
        let checkpoint = try CheckpointStore.load(source)
        return .text(checkpoint.configYAML, source: "the configuration in \(source.path)")
    }

    public static func newRunID() -> String {
        let stamp = ISO8601DateFormatter().string(from: Date()).replacingOccurrences(of: ":", with: "")
        return "run-\(stamp)-" + randomBytes(3).map { String(format: "%02x", $0) }.joined()
    }
}

/// Workers started by `launch` die with it, and ignore Ctrl-C (which the launcher turns into a
/// clean shutdown of the whole run).
///
/// Not PR_SET_PDEATHSIG: Linux sends that signal when the *thread* that forked the child exits,
/// and the launcher spawns from a pool thread that the runtime may retire at any time. Instead a
/// watchdog thread checks every 200 ms whether the worker has been re-parented, which happens
/// exactly when the launcher is gone, however it died (SIGKILL included).
public enum ParentWatch {
    public static let environmentVariable = "CSPTRAIN_PARENT_PID"

    public static func installIfLaunched() {
        guard let text = ProcessInfo.processInfo.environment[environmentVariable], let parent = Int32(text) else { return }
        signal(SIGINT, SIG_IGN)
        let watchdog = Thread {
            while getppid() == parent { usleep(200_000) }
            StandardError.write("csptrain worker: the launcher (pid \(parent)) is gone; exiting\n")
            exit(1)
        }
        watchdog.name = "parent-watch"
        watchdog.start()
    }
}

/// Runs a handler on SIGINT and SIGTERM instead of dying.
/// `@unchecked`: the dispatch sources are immutable after init and thread-safe to cancel.
public final class SignalTrap: @unchecked Sendable {
    private let sources: [any DispatchSourceSignal]

    public init(_ handler: @escaping @Sendable (Int32) -> Void) {
        sources = [SIGINT, SIGTERM].map { sig in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { handler(sig) }
            source.resume()
            return source
        }
    }

    public func cancel() {
        for s in sources { s.cancel() }
    }
}
