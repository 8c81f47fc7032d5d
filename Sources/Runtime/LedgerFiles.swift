import Checkpoints
import Configuration
import FileIO
import Coordination
import Foundation
import Pruning
import Tensors
import Training
import Wire

#if canImport(Glibc)
import Glibc
#endif

/// `<run-dir>/ledger/epoch-<e>.jsonl`: one line per applied step of the epoch,
/// `{"step": 12, "epoch": 0, "examples": [...]}`.
///
/// Appended as steps are applied; the checkpoint's ledger is the authority. On resume the files
/// of the epochs still open are rewritten from it (lines of steps applied after the checkpoint
/// and lost with the crash disappear) and files of later epochs are removed.
///
/// Lines the disk refuses wait in a bounded backlog (see ``MetricsWriter``) and go out in order
/// with the next `append` or ``flushBacklog()``.
final class LedgerFiles {
    let folder: URL
    private let lines: LineWriter

    init(folder: URL, limits: BacklogLimits = .standard) {
        self.folder = folder
        lines = LineWriter(limits: limits, createsFolders: true)
    }

    func file(epoch: Int) -> URL { folder.appendingPathComponent("epoch-\(epoch).jsonl") }

    static func line(_ entry: RunLedger.Step) -> String {
        "{\"step\":\(entry.step),\"epoch\":\(entry.epoch),\"examples\":[" + entry.examples.map(String.init).joined(separator: ",") + "]}\n"
    }

    /// Appends each step's line to its epoch's file, after any held lines. Throws
    /// ``LineWriteError`` when a line cannot be written now: it is held, with the ones after it.
    func append(_ entries: [RunLedger.Step]) throws(LineWriteError) {
        for entry in entries {
            try lines.append(Array(Self.line(entry).utf8), to: file(epoch: entry.epoch).path)
        }
    }

    /// Writes the held lines, oldest first; throws (keeping them) when the disk still refuses.
    func flushBacklog() throws(LineWriteError) {
        try lines.flushBacklog()
    }

    /// Lines held, and dropped, so far.
    var backlog: BacklogStatus { lines.backlog }

    /// Makes an epoch's file durable (fsync of the file and the folder), once the epoch is
    /// complete: a checkpoint then keeps only a summary of it. Throws ``LineWriteError`` while
    /// lines are held (the file is not complete), ``FileError`` when the fsync fails.
    func syncFile(epoch: Int) throws {
        try lines.flushBacklog()
        let path = file(epoch: epoch).path
        try lines.sync(path)
        lines.close(path)
        try AtomicFile.syncFolder(of: path)
    }

    /// Makes the files agree with `ledger` (a fresh run: no files). Returns problems found in the
    /// files of completed epochs (missing or miscounted), for a warning.
    func restore(_ ledger: RunLedger) throws -> [String] {
        // The files are rewritten behind the open descriptors: drop them, and any held line.
        lines.closeAll()
        lines.discardBacklog()
        do { return try restoreFiles(ledger) } catch {
            throw RunFolderError("cannot bring the ledger in \(folder.path) in line with the checkpoint: \(error)")
        }
    }

    private func restoreFiles(_ ledger: RunLedger) throws(FileError) -> [String] {
        try Folder.create(folder.path)
        let openEpochs = Set(ledger.open.map(\.epoch))
        let completed = Dictionary(ledger.completed.map { ($0.epoch, $0) }, uniquingKeysWith: { a, _ in a })
        var problems: [String] = []
        for name in try Folder.names(in: folder.path) {
            guard name.hasPrefix("epoch-"), name.hasSuffix(".jsonl"), let e = Int(name.dropFirst(6).dropLast(6)) else { continue }
            if completed[e] == nil, !openEpochs.contains(e) { try Folder.removeTree(folder.appendingPathComponent(name).path) }
        }
        for e in openEpochs.sorted() {
            let text = ledger.open.filter { $0.epoch == e }.map(Self.line).joined()
            try AtomicFile.write(text, to: file(epoch: e).path)
        }
        for (e, summary) in completed.sorted(by: { $0.key < $1.key }) {
            let text: String
            do throws(FileError) { text = try FileReader.readText(file(epoch: e).path) } catch {
                let what = error.code == ENOENT ? "is missing" : "cannot be read (\(error.reason))"
                problems.append("\(file(epoch: e).path) \(what) (epoch \(e) was completed with \(summary.steps) steps)")
                continue
            }
            let count = text.split(separator: "\n").count
            if count != summary.steps {
                problems.append("\(file(epoch: e).path) has \(count) lines, the checkpoint says epoch \(e) took \(summary.steps) steps")
            }
        }
        return problems
    }
}

/// Drops the lines of a JSON-lines file (metrics.jsonl, pruning.jsonl) whose "step" is past
/// `step`: on resume, the steps after the checkpoint were lost and are run again.
func truncateJSONLines(_ url: URL, afterStep step: Int) throws {
    let data: [UInt8]
    do throws(FileError) { data = try FileReader.read(url.path) } catch {
        if error.code == ENOENT { return }
        throw RunFolderError(error, "cannot rewrite \(url.lastPathComponent) from the resumed step")
    }
    var kept: [Substring] = []
    let text = String(decoding: data, as: UTF8.self)
    for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              let s = object["step"] as? Int else { continue }  // a torn last line goes too
        if s <= step { kept.append(line) }
    }
    do { try AtomicFile.write(kept.joined(separator: "\n") + (kept.isEmpty ? "" : "\n"), to: url.path) } catch {
        throw RunFolderError(error, "cannot rewrite \(url.lastPathComponent) from the resumed step")
    }
}
