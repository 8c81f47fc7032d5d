import Checkpoints
import Configuration
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
        try CoordinatorSetup.prepare(folder: folder, config: options.config)
        let lock = try folder.lock()
        defer { withExtendedLifetime(lock) {} }
        let tokenFile = try folder.writeNewToken()
        let token = try RunToken.load(file: tokenFile.path)
        let display = ProgressDisplay(enabled: options.showProgress)
        let coordinator = try CoordinatorService(config: options.config, runID: CoordinatorSetup.newRunID(), token: token,
                                                 folder: folder, logger: logger, progress: display.handle)
        let url = try coordinator.listen(options.listen)

        let signals = SignalTrap { signal in
            display.finishLine()
            self.logger.notice("\(signal == SIGINT ? "Ctrl-C" : "SIGTERM"): stopping after writing a checkpoint")
            coordinator.stop(.interrupted, message: "stopped by \(signal == SIGINT ? "SIGINT" : "SIGTERM")")
        }
        defer { signals.cancel() }

        try FileManager.default.createDirectory(at: folder.logsFolder, withIntermediateDirectories: true)
        let children = try (0 ..< options.workers).map { i in
            try spawnWorker(index: i, url: url, tokenFile: tokenFile.path)
        }
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
        process.arguments = ["worker", "--connect", url, "--token-file", tokenFile, "--name", "worker-\(index)"]
        var environment = ProcessInfo.processInfo.environment
        environment[ParentWatch.environmentVariable] = String(getpid())
        process.environment = environment
        let log = options.folder.logsFolder.appendingPathComponent("worker-\(index).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
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
    static var executablePath: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }
}

/// Checks shared by `launch` and `coordinator` before a run starts.
public enum CoordinatorSetup {
    public static func prepare(folder: RunFolder, config: RunConfiguration) throws {
        try folder.create()
        let store = CheckpointStore(runDirectory: folder.url)
        if !store.steps().isEmpty {
            throw RunFolderError("the run folder \(folder.url.path) already holds checkpoints of an earlier run (\(store.directory.path)); choose a new --run-dir, or remove the old one")
        }
        try folder.write(config.yamlText(), to: folder.configFile)
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
            FileHandle.standardError.write(Data("csptrain worker: the launcher (pid \(parent)) is gone; exiting\n".utf8))
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
