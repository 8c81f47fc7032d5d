import FileIO
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The files of a run folder: lock, token, resolved configuration, metrics, summary.
public struct RunFolder: Sendable {
    public let url: URL

    public init(_ path: String) {
        url = URL(fileURLWithPath: path, isDirectory: true).standardizedFileURL
    }

    public var configFile: URL { url.appendingPathComponent("config.yaml") }
    public var metricsFile: URL { url.appendingPathComponent("metrics.jsonl") }
    /// One line per support change of the pruning method (per layer: density, m/b, recovery error, overlap with top-k).
    public var pruningFile: URL { url.appendingPathComponent("pruning.jsonl") }
    public var summaryFile: URL { url.appendingPathComponent("summary.json") }
    public var tokenFile: URL { url.appendingPathComponent("token") }
    public var lockFile: URL { url.appendingPathComponent("coordinator.lock") }
    public var endpointFile: URL { url.appendingPathComponent("endpoint") }
    /// The live page's address, when `observe.http` is on (port filled in).
    public var pageFile: URL { url.appendingPathComponent("page") }
    public var logsFolder: URL { url.appendingPathComponent("logs", isDirectory: true) }
    public var ledgerFolder: URL { url.appendingPathComponent("ledger", isDirectory: true) }

    /// Creates the folder (and missing parents); returns the folders it made, outermost first.
    @discardableResult
    public func create() throws -> [String] {
        do { return try Folder.create(url.path) } catch { throw RunFolderError(error) }
    }

    /// Takes the run's lock (flock, released by the kernel if this process dies). A second
    /// coordinator on the same folder is refused with the holder's pid.
    public func lock() throws -> RunLock {
        let path = lockFile.path
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            // errno first: anything else (even building a message) may overwrite it.
            let code = errno
            let error = FileError("open the lock file", path: path, code: code)
            throw code == EACCES || code == EPERM ? RunFolderError(error, nil, hint: ownerHint()) : RunFolderError(error)
        }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            let holder = (try? FileReader.readText(path))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
            close(fd)
            guard code == EWOULDBLOCK else { throw RunFolderError(FileError("lock", path: path, code: code)) }
            throw RunFolderError("the run folder \(url.path) is in use by another coordinator (pid \(holder.isEmpty ? "?" : holder), lock \(path)); stop it or choose another --run-dir")
        }
        // The pid is for the message above: a lock taken without it still protects the run.
        if ftruncate(fd, 0) == 0 { try? Descriptor.write(fd, Array("\(getpid())\n".utf8), path: path) }
        return RunLock(fd: fd)
    }

    /// Writes a fresh random token readable by this user only (mode 0600), atomically.
    public func writeNewToken() throws -> URL {
        let token = randomBytes(32).map { String(format: "%02x", $0) }.joined()
        do { try AtomicFile.write(token + "\n", to: tokenFile.path, mode: 0o600) } catch {
            throw RunFolderError(error, "cannot write the token file")
        }
        return tokenFile
    }

    /// Who owns the folder, for a permission error: "the folder is owned by alice (uid 1001),
    /// mode 0755; this process runs as uid 1002".
    func ownerHint() -> String? {
        var stats = stat()
        guard stat(url.path, &stats) == 0 else { return nil }
        let name = getpwuid(stats.st_uid).map { String(cString: $0.pointee.pw_name) } ?? "?"
        return "the folder is owned by \(name) (uid \(stats.st_uid)), mode 0\(String(stats.st_mode & 0o7777, radix: 8)); this process runs as uid \(geteuid()): run as its owner or choose another --run-dir"
    }

    /// Creates (or empties) `logs/<name>` and returns it open for writing, to hand to a child
    /// process as its stdout and stderr.
    public func openLog(_ name: String) throws -> FileHandle {
        do { try Folder.create(logsFolder.path) } catch { throw RunFolderError(error) }
        let path = logsFolder.appendingPathComponent(name).path
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            let code = errno
            throw RunFolderError(FileError("create the log", path: path, code: code))
        }
        return FileHandle(fileDescriptor: fd, closeOnDealloc: true)
    }

    /// Replaces `file` atomically (temporary file, fsync, rename).
    public func write(_ text: String, to file: URL) throws {
        do { try AtomicFile.write(text, to: file.path) } catch { throw RunFolderError(error) }
    }
}

/// Holds the run folder's lock until released or the process exits.
public final class RunLock: Sendable {
    private let fd: Int32
    init(fd: Int32) { self.fd = fd }
    deinit { close(fd) }
}

public struct RunFolderError: Error, CustomStringConvertible {
    public let description: String
    /// The failed file operation behind it, with its errno.
    public let file: FileError?

    public init(_ description: String) {
        self.description = description
        file = nil
    }

    /// `context` goes before the file error's own text ("cannot write the token file: cannot
    /// create /r/token.tmp: Read-only file system (errno 30)").
    /// `hint` goes after it (what to do).
    public init(_ error: FileError, _ context: String? = nil, hint: String? = nil) {
        description = (context.map { "\($0): \(error)" } ?? error.description) + (hint.map { "; \($0)" } ?? "")
        file = error
    }
}

/// Reads the run token: from `file`, else from the environment variable CSPTRAIN_TOKEN.
/// Never from the command line, where `ps` would show it.
public enum RunToken {
    public static let environmentVariable = "CSPTRAIN_TOKEN"

    public static func load(file: String?) throws -> [UInt8] {
        if let file {
            let text: String
            do { text = try FileReader.readText(file) } catch { throw RunFolderError(error, "cannot read the run token") }
            let token = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !token.isEmpty else { throw RunFolderError("the token file \(file) is empty") }
            return Array(token.utf8)
        }
        if let env = ProcessInfo.processInfo.environment[environmentVariable], !env.isEmpty {
            return Array(env.trimmingCharacters(in: .whitespacesAndNewlines).utf8)
        }
        throw RunFolderError("no run token: pass --token-file FILE (the coordinator's run folder holds one, mode 0600) or set \(environmentVariable)")
    }
}

/// One line of metrics.jsonl.
public struct StepMetrics: Codable, Sendable {
    public var step: Int
    public var loss: Double
    public var gradNorm: Double
    public var learningRate: Double
    public var examples: Int
    public var workers: Int
    public var stepSeconds: Double
    public var examplesPerSecond: Double
    public var duplicateChunks: Int
    public var staleChunks: Int
    public var reassignedMicroBatches: Int
    public var sparsity: Double
    /// Time the projection step took on the coordinator.
    public var projectionSeconds: Double = 0
    /// Time since the coordinator started, when the line was written (after validation, on
    /// steps that were scored).
    public var wallSeconds: Double = 0
    /// Validation word and character error rates, on the steps where they were measured.
    public var validWer: Double? = nil
    public var validWerChannel: Double? = nil
    public var validCer: Double? = nil
    public var validCerChannel: Double? = nil
    /// The same on `data.valid_seen` (training voices), when the run has it.
    public var validWerSeen: Double? = nil
    public var validCerSeen: Double? = nil
}

/// summary.json.
public struct RunSummary: Codable, Sendable {
    public enum Status: String, Codable, Sendable { case completed, failed, interrupted }
    public var status: Status
    public var runId: String
    public var steps: Int
    public var startStep: Int
    public var workersSeen: Int
    public var workersFailed: Int
    public var firstLoss: Double?
    public var finalLoss: Double?
    public var sparsity: Double
    public var sparsityOverall: Double
    public var checkpoint: String?
    public var wallSeconds: Double
    public var examplesPerSecond: Double
    public var duplicateChunks: Int
    public var staleChunks: Int
    public var reassignedMicroBatches: Int
    /// Requests nng's REQ sent again (a late reply) that were answered as their originals were.
    public var resentRequests: Int?
    /// Work requests that came while the member's last micro-batch was still arriving.
    public var overlappedWorkRequests: Int? = nil
    /// Gradient chunks that came on chunk streams rather than as requests (transport.chunk_stream).
    public var streamChunks: Int? = nil
    /// Models written on chunk streams rather than into replies.
    public var streamWeights: Int? = nil
    /// The last validation word error rates on held-out voices (clean, channel-degraded), when
    /// measured, and on training voices (`data.valid_seen`), when the run has that set.
    public var validWer: Double?
    public var validWerChannel: Double?
    public var validWerSeen: Double? = nil
    /// The pruning method and the coordinator's total time in its projection step.
    public var pruningMethod: String = "none"
    public var projectionSeconds: Double = 0
    /// `deterministic: true`: the weights do not depend on workers, arrival order or resumes.
    public var deterministic = false
    /// The checkpoint this run resumed from (nil: it started at step 0).
    public var resumedFrom: String?
    public var message: String?

    /// "validation WER: 12.30% held-out voices (channel-degraded 15.10%), 4.20% training voices",
    /// or nil when nothing was scored.
    public var validationLine: String? {
        let pct = { (v: Double) in String(format: "%.2f%%", 100 * v) }
        var parts: [String] = []
        // "held-out voices" only beside a training-voices split: otherwise what `valid` holds out
        // depends on the corpus (recipe 1: style combinations, not voices).
        let held = validWerSeen == nil ? "" : " held-out voices"
        if let w = validWer { parts.append("\(pct(w))\(held)" + (validWerChannel.map { " (channel-degraded \(pct($0)))" } ?? "")) }
        else if let c = validWerChannel { parts.append("\(pct(c))\(held), channel-degraded") }
        if let s = validWerSeen { parts.append("\(pct(s)) training voices") }
        return parts.isEmpty ? nil : "validation WER: " + parts.joined(separator: ", ")
    }

    /// Non-finite numbers are null, named in `non_finite` (see ``JSONRecord``).
    public func json(pretty: Bool = true) -> String {
        // Encoding a struct of numbers and strings cannot fail.
        String(decoding: (try? JSONRecord.encode(self, pretty: pretty)) ?? [], as: UTF8.self)
    }
}
