import FileIO
import Foundation

/// Appends one JSON object per line (metrics.jsonl, pruning.jsonl; see ``JSONRecord`` for how
/// infinities and NaNs are written).
///
/// A line the disk refuses (full, gone read-only) is held in a bounded backlog and written, in
/// order, by the next `write` or by ``flushBacklog()`` once the disk takes it again: with
/// `checkpoint.on_write_failure: continue` a full disk costs no line as long as the backlog
/// holds (``BacklogLimits/standard``); past it the oldest lines go and are counted.
/// Owned by the coordinator's actor: never shared across threads.
final class MetricsWriter {
    let url: URL
    private let lines: LineWriter

    /// Opens `url`: emptied (`truncate`, a fresh run) or appended to (a resumed run). Throws
    /// when the run folder cannot take the file.
    convenience init(file url: URL, truncate: Bool, limits: BacklogLimits = .standard) throws(FileError) {
        self.init(unopened: url, limits: limits)
        try lines.prepare(url.path, truncate: truncate)
    }

    /// The file is opened (appending, created when missing) by the first line.
    init(unopened url: URL, limits: BacklogLimits = .standard) {
        self.url = url
        lines = LineWriter(limits: limits)
    }

    /// Appends `record` as one line, after any held ones. Throws ``LineWriteError`` when it
    /// cannot be written now: it is then held (nothing is lost yet) and the error says how many
    /// lines wait and how many were dropped.
    func write(_ record: some Encodable) throws {
        try lines.append(try JSONRecord.encode(record) + [UInt8(ascii: "\n")], to: url.path)
    }

    /// Writes the held lines, oldest first; throws (keeping them) when the disk still refuses.
    func flushBacklog() throws(LineWriteError) {
        try lines.flushBacklog()
    }

    /// Lines held, and dropped, so far.
    var backlog: BacklogStatus { lines.backlog }
}
