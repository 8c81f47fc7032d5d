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
    public var logsFolder: URL { url.appendingPathComponent("logs", isDirectory: true) }
    public var ledgerFolder: URL { url.appendingPathComponent("ledger", isDirectory: true) }

    public func create() throws {
        do {
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        } catch {
            throw RunFolderError("cannot create the run folder \(url.path): \(error.localizedDescription)")
        }
    }

    /// Takes the run's lock (flock, released by the kernel if this process dies). A second
    /// coordinator on the same folder is refused with the holder's pid.
    public func lock() throws -> RunLock {
        let fd = open(lockFile.path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw RunFolderError("cannot open the lock file \(lockFile.path): \(String(cString: strerror(errno)))") }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let holder = (try? String(contentsOf: lockFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
            close(fd)
            throw RunFolderError("the run folder \(url.path) is in use by another coordinator (pid \(holder), lock \(lockFile.path)); stop it or choose another --run-dir")
        }
        ftruncate(fd, 0)
        let pid = "\(getpid())\n"
        _ = pid.withCString { Glibc.write(fd, $0, strlen($0)) }
        return RunLock(fd: fd)
    }

    /// Writes a fresh random token readable by this user only (mode 0600).
    public func writeNewToken() throws -> URL {
        let token = randomBytes(32).map { String(format: "%02x", $0) }.joined()
        let fd = open(tokenFile.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw RunFolderError("cannot write the token file \(tokenFile.path): \(String(cString: strerror(errno)))") }
        fchmod(fd, 0o600)
        _ = (token + "\n").withCString { Glibc.write(fd, $0, strlen($0)) }
        close(fd)
        return tokenFile
    }

    public func write(_ text: String, to file: URL) throws {
        do { try Data(text.utf8).write(to: file, options: .atomic) } catch {
            throw RunFolderError("cannot write \(file.path): \(error.localizedDescription)")
        }
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
    public init(_ description: String) { self.description = description }
}

/// Reads the run token: from `file`, else from the environment variable CSPTRAIN_TOKEN.
/// Never from the command line, where `ps` would show it.
public enum RunToken {
    public static let environmentVariable = "CSPTRAIN_TOKEN"

    public static func load(file: String?) throws -> [UInt8] {
        if let file {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw RunFolderError("cannot read the token file \(file)")
            }
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
    /// The last validation word error rates (clean, channel-degraded), when measured.
    public var validWer: Double?
    public var validWerChannel: Double?
    /// The pruning method and the coordinator's total time in its projection step.
    public var pruningMethod: String = "none"
    public var projectionSeconds: Double = 0
    /// `deterministic: true`: the weights do not depend on workers, arrival order or resumes.
    public var deterministic = false
    /// The checkpoint this run resumed from (nil: it started at step 0).
    public var resumedFrom: String?
    public var message: String?

    public func json(pretty: Bool = true) -> String {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys] : [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
    }
}

/// Appends one JSON object per line (metrics.jsonl, pruning.jsonl), flushed per line so a crash
/// loses at most the last one.
final class MetricsWriter {
    // Owned by the coordinator's actor: never shared across threads.
    private let handle: FileHandle?
    private let encoder: JSONEncoder

    /// `truncate`: start the file empty; otherwise append to what it holds (a resumed run).
    init(url: URL, truncate: Bool = true) {
        if truncate || !FileManager.default.fileExists(atPath: url.path) {
            _ = FileManager.default.createFile(atPath: url.path, contents: nil)
        }
        handle = try? FileHandle(forWritingTo: url)
        _ = try? handle?.seekToEnd()
        encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    }

    func append(_ record: some Encodable) {
        guard let data = try? encoder.encode(record) else { return }
        handle?.write(data + Data("\n".utf8))
    }

    deinit { try? handle?.close() }
}
