import Foundation
import Testing

/// A small tmpfs mounted for one test: a disk that fills up, or one remounted read-only.
///
/// Mounting needs root (CI runs as root). Elsewhere the tests that need it are skipped, with
/// the reason; with CI=true they run, and fail when the mount does.
final class ScratchDisk {
    let path: String

    static let available = geteuid() == 0 || ProcessInfo.processInfo.environment["CI"] == "true"
    static let skipReason: Comment = "mounting a tmpfs needs root: run as root (as CI does) to test a full or read-only disk"

    init(bytes: Int) throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("csptrain-disk-\(UInt64.random(in: 0 ... .max))").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        do { try Self.run("/bin/mount", "-t", "tmpfs", "-o", "size=\(bytes)", "tmpfs", path) } catch {
            try? FileManager.default.removeItem(atPath: path)
            throw error
        }
    }

    /// Makes the disk read-only (chmod does not stop root; a read-only mount does).
    func remountReadOnly() throws {
        try Self.run("/bin/mount", "-o", "remount,ro", path)
    }

    deinit {
        try? Self.run("/bin/umount", "-l", path)
        try? FileManager.default.removeItem(atPath: path)
    }

    static func run(_ arguments: String...) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let text = String(decoding: (try? errors.fileHandleForReading.readToEnd()) ?? Data(), as: UTF8.self)
            throw ScratchDiskError(description: "\(arguments.joined(separator: " ")) failed (status \(process.terminationStatus)): \(text)")
        }
    }
}

struct ScratchDiskError: Error, CustomStringConvertible { let description: String }
