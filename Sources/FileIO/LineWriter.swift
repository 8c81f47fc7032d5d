#if canImport(Glibc)
import Glibc
#endif

/// How much a ``LineWriter`` holds in memory while its lines cannot be written.
public struct BacklogLimits: Sendable, Equatable {
    public var maxLines: Int
    public var maxBytes: Int
    public init(maxLines: Int, maxBytes: Int) {
        self.maxLines = max(1, maxLines)
        self.maxBytes = max(1, maxBytes)
    }
    /// 100,000 lines or 64 MiB: hours of metrics and ledger lines at a step a second.
    public static let standard = BacklogLimits(maxLines: 100_000, maxBytes: 64 << 20)
}

/// The lines a ``LineWriter`` holds, and those it had to give up.
public struct BacklogStatus: Sendable, Equatable, CustomStringConvertible {
    public var heldLines = 0
    public var heldBytes = 0
    /// Lines dropped, oldest first, because the backlog was at its limit (since the writer was made).
    public var droppedLines = 0
    public init() {}

    public var description: String {
        var text = "\(heldLines) line\(heldLines == 1 ? "" : "s") (\(Disk.bytes(UInt64(heldBytes)))) held in memory until they can be written"
        if droppedLines > 0 { text += "; \(droppedLines) older line\(droppedLines == 1 ? "" : "s") dropped (the backlog was full)" }
        return text
    }
}

/// A line could not be written now: it is held, with every line after it, and goes out (in
/// order) with a later append or ``LineWriter/flushBacklog()``.
public struct LineWriteError: Error, Sendable, CustomStringConvertible {
    public let cause: FileError
    public let backlog: BacklogStatus
    public var description: String { "\(cause); \(backlog)" }
}

/// Appends lines to files and holds those the disk refuses (full, gone read-only) in a bounded
/// in-memory backlog, written in their original order as soon as the disk takes them again.
///
/// Order is kept across files: no line is written while an older one (to any file) is held.
/// Past the limits the oldest held lines are dropped and counted. Not thread-safe: owned by one
/// actor or thread.
public final class LineWriter {
    public let limits: BacklogLimits
    private var held: [(path: String, bytes: [UInt8])] = []
    private var heldStart = 0   // held[..<heldStart] are written; compacted now and then
    private var status = BacklogStatus()
    private var open: [String: FileAppender] = [:]
    private var openOrder: [String] = []
    /// Files kept open at once (the ledger moves from one epoch's file to the next).
    private static let maxOpenFiles = 4

    /// Creates missing folders on the way to a file (`createsFolders`) when it is first opened.
    public let createsFolders: Bool

    public init(limits: BacklogLimits = .standard, createsFolders: Bool = false) {
        self.limits = limits
        self.createsFolders = createsFolders
    }

    public var backlog: BacklogStatus { status }

    /// Opens `path` now (creating it; `truncate` empties it), so that a folder that cannot take
    /// it is reported at start rather than at the first line.
    public func prepare(_ path: String, truncate: Bool) throws(FileError) {
        if truncate { close(path) }
        if open[path] == nil { try remember(FileAppender(path: path, truncate: truncate)) }
    }

    /// Appends `line` (which carries its own newline) to `path`, after every held line. Throws
    /// when a line cannot be written; `line` is then held (bounded) and nothing is lost yet.
    public func append(_ line: [UInt8], to path: String) throws(LineWriteError) {
        if heldCount == 0 {
            do throws(FileError) { try appender(path).append(line); return } catch {
                hold(line, path)
                throw LineWriteError(cause: error, backlog: status)
            }
        }
        hold(line, path)
        try flushBacklog()
    }

    /// Writes the held lines, oldest first, until one fails (thrown; it and the rest stay held).
    public func flushBacklog() throws(LineWriteError) {
        while heldStart < held.count {
            let (path, bytes) = held[heldStart]
            do throws(FileError) { try appender(path).append(bytes) } catch {
                throw LineWriteError(cause: error, backlog: status)
            }
            held[heldStart].bytes = []
            heldStart += 1
            status.heldLines -= 1
            status.heldBytes -= bytes.count
        }
        held.removeAll(keepingCapacity: false)
        heldStart = 0
    }

    /// True when a line for `path` is still held.
    public func holds(_ path: String) -> Bool {
        held[heldStart...].contains { $0.path == path }
    }

    /// fsyncs `path` (an open file, or one opened for it).
    public func sync(_ path: String) throws(FileError) {
        try appender(path).sync()
    }

    /// Closes `path` (it is reopened, appending, by the next line for it).
    public func close(_ path: String) {
        open.removeValue(forKey: path)?.close()
        openOrder.removeAll { $0 == path }
    }

    /// Closes every file (before they are rewritten or removed behind this writer's back).
    public func closeAll() {
        for appender in open.values { appender.close() }
        open = [:]
        openOrder = []
    }

    /// Forgets the held lines (the files were rewritten from a checkpoint).
    public func discardBacklog() {
        held = []
        heldStart = 0
        status.heldLines = 0
        status.heldBytes = 0
    }

    private var heldCount: Int { held.count - heldStart }

    private func hold(_ line: [UInt8], _ path: String) {
        held.append((path, line))
        status.heldLines += 1
        status.heldBytes += line.count
        // The newest line always stays, even when alone it is past the byte limit.
        while heldCount > 1, status.heldLines > limits.maxLines || status.heldBytes > limits.maxBytes {
            status.heldLines -= 1
            status.heldBytes -= held[heldStart].bytes.count
            status.droppedLines += 1
            held[heldStart].bytes = []
            heldStart += 1
        }
        if heldStart > 1024, heldStart * 2 > held.count {
            held.removeFirst(heldStart)
            heldStart = 0
        }
    }

    private func appender(_ path: String) throws(FileError) -> FileAppender {
        if let a = open[path] { return a }
        let a: FileAppender
        do throws(FileError) { a = try FileAppender(path: path) } catch {
            guard error.code == ENOENT, createsFolders else { throw error }
            try Folder.create(AtomicFile.parent(of: path))
            a = try FileAppender(path: path)
        }
        remember(a)
        return a
    }

    private func remember(_ appender: FileAppender) {
        open[appender.path] = appender
        openOrder.append(appender.path)
        while openOrder.count > Self.maxOpenFiles { close(openOrder[0]) }
    }
}
