#if canImport(Glibc)
import Glibc
#endif

/// A failed file operation: what was tried, on which file, the errno and its text, and, when the
/// disk is the likely cause (full, read-only, failing), the file system the file lives on.
///
/// The errno is captured by the caller right after the failing call (``FileError/lastError``),
/// before anything else can overwrite it.
public struct FileError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What was tried, as a verb: "open", "write", "fsync", "rename into place", "lock".
    public let operation: String
    public let path: String
    /// The errno.
    public let code: Int32
    /// strerror(code), e.g. "No space left on device".
    public let reason: String
    /// The file system holding `path` (nil when unknown or not relevant to the error).
    public let disk: Disk?

    public init(_ operation: String, path: String, code: Int32, disk: Disk? = nil) {
        self.operation = operation
        self.path = path
        self.code = code
        reason = Self.text(code)
        self.disk = disk ?? (Self.diskErrors.contains(code) ? Disk(containing: path) : nil)
    }

    /// An error from the errno the last system call left (read it first thing after the call).
    public static func lastError(_ operation: String, path: String) -> FileError {
        let code = errno
        return FileError(operation, path: path, code: code)
    }

    /// The same error, with the file system holding `path` named even when the errno does not
    /// point at the disk.
    public func namingDisk() -> FileError {
        disk != nil ? self : FileError(operation, path: path, code: code, disk: Disk(containing: path))
    }

    /// The disk is full (or the user's quota is).
    public var isNoSpace: Bool { code == ENOSPC || code == EDQUOT }

    public var description: String {
        var text = "cannot \(operation) \(path): \(reason) (errno \(code))"
        if let disk { text += "; the file system: \(disk)" }
        return text
    }

    /// Errnos whose cause is the disk rather than the path: say which disk.
    static let diskErrors: Set<Int32> = [ENOSPC, EDQUOT, EROFS, EIO, EFBIG]

    public static func text(_ code: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        // strerror_r (the XSI one, as Swift imports it) is thread-safe, unlike strerror.
        guard strerror_r(code, &buffer, buffer.count) == 0 else { return "errno \(code)" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
