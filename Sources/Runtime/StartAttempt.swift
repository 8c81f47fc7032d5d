import FileIO
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What a coordinator's start attempt finds in its run folder, so that a failed start (a port
/// in use, a refused resume, a full disk) removes exactly what it made and nothing else.
///
///     let attempt = folder.beginStart()      // before folder.create()
///     do { ...create, lock, token, service, listen, spawn... ; attempt.commit() }
///     catch { attempt.rollback(); throw error }   // while still holding the lock
///
/// The run folder's own files (token, lock, config.yaml, metrics, pruning, summary, endpoint,
/// ledger/, logs/, checkpoints/) that did not exist before are removed, then the folders the
/// attempt made, when empty. A token that existed is kept, and put back if the attempt
/// replaced it. Files that existed are otherwise left as they are.
public final class StartAttempt: Sendable {
    public let folder: RunFolder
    /// The run folder and missing parents, innermost first: removed when empty.
    private let missingFolders: [String]
    private let existed: Set<String>
    private let tokenBefore: [UInt8]?
    private let state = Mutex(State.open)
    private enum State { case open, committed, rolledBack }

    /// The entries a start makes, by name in the run folder.
    static func entries(of folder: RunFolder) -> [URL] {
        [folder.tokenFile, folder.lockFile, folder.configFile, folder.metricsFile, folder.pruningFile, folder.summaryFile,
         folder.endpointFile, folder.ledgerFolder, folder.logsFolder, folder.url.appendingPathComponent("checkpoints")]
    }

    init(folder: RunFolder) {
        self.folder = folder
        var missing: [String] = []
        var candidate = folder.url.path
        while candidate != "/", !candidate.isEmpty, access(candidate, F_OK) != 0 {
            missing.append(candidate)
            candidate = (candidate as NSString).deletingLastPathComponent
        }
        missingFolders = missing
        existed = Set(Self.entries(of: folder).map(\.path).filter { path in
            var stats = stat()
            return lstat(path, &stats) == 0
        })
        tokenBefore = try? FileReader.read(folder.tokenFile.path)
    }

    /// The start succeeded: the folder's contents are the run's from here on.
    public func commit() {
        state.withLock { if $0 == .open { $0 = .committed } }
    }

    /// Removes what the attempt made (once; nothing after `commit`). Call it before releasing
    /// the run's lock, so that no other coordinator's files are taken for this attempt's.
    @discardableResult
    public func rollback() -> StartRollback {
        var result = StartRollback()
        let proceed = state.withLock { s -> Bool in
            guard s == .open else { return false }
            s = .rolledBack
            return true
        }
        guard proceed else { return result }
        for url in Self.entries(of: folder) {
            let path = url.path
            if existed.contains(path) {
                if url == folder.tokenFile, let before = tokenBefore, (try? FileReader.read(path)) != before {
                    do { try AtomicFile.write(before, to: path, mode: 0o600); result.restored.append(path) } catch { result.failures.append(error) }
                }
                continue
            }
            for candidate in [path, path + ".tmp"] {
                var stats = stat()
                guard lstat(candidate, &stats) == 0 else { continue }
                do { try Folder.removeTree(candidate); result.removed.append(candidate) } catch { result.failures.append(error) }
            }
        }
        for path in missingFolders where rmdir(path) == 0 {
            result.removed.append(path)
        }
        return result
    }
}

/// What ``StartAttempt/rollback()`` did.
public struct StartRollback: Sendable, CustomStringConvertible {
    public var removed: [String] = []
    /// A token the attempt replaced, put back.
    public var restored: [String] = []
    public var failures: [FileError] = []

    public var description: String {
        var parts: [String] = []
        if !removed.isEmpty { parts.append("removed " + removed.joined(separator: ", ")) }
        if !restored.isEmpty { parts.append("restored " + restored.joined(separator: ", ")) }
        if !failures.isEmpty { parts.append("could not undo: " + failures.map(\.description).joined(separator: "; ")) }
        return parts.isEmpty ? "nothing to undo" : parts.joined(separator: "; ")
    }
}

extension RunFolder {
    /// Notes what the folder holds before a coordinator starts in it; see ``StartAttempt``.
    public func beginStart() -> StartAttempt { StartAttempt(folder: self) }
}
