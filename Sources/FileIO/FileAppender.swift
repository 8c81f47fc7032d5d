#if canImport(Glibc)
import Glibc
#endif

/// Appends to one file with plain POSIX calls, so that a full disk or a failing one is an error
/// carrying the errno, its text, the path and the file system, never a trap.
///
/// Each `append` is all or nothing: when the disk fills part-way through, the part written is cut
/// off again (ftruncate), so a later retry of the same bytes leaves no torn line behind.
/// Not thread-safe: owned by one actor or thread.
public final class FileAppender {
    public let path: String
    private var fd: Int32

    /// Opens `path` for appending, creating it (with `mode`) when missing; `truncate` empties it.
    public init(path: String, truncate: Bool = false, mode: mode_t = 0o644) throws(FileError) {
        self.path = path
        fd = try openFile(path, O_WRONLY | O_CREAT | O_APPEND | (truncate ? O_TRUNC : 0), mode: mode)
    }

    deinit { close() }

    public var isOpen: Bool { fd >= 0 }

    public func append(_ bytes: [UInt8]) throws(FileError) {
        var failure: FileError?
        bytes.withUnsafeBytes { raw in
            do throws(FileError) { try append(raw) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    public func append(_ text: String) throws(FileError) {
        try append(Array(text.utf8))
    }

    public func append(_ bytes: UnsafeRawBufferPointer) throws(FileError) {
        guard fd >= 0 else { throw FileError("write", path: path, code: EBADF) }
        guard bytes.count > 0 else { return }
        let end = lseek(fd, 0, SEEK_END)
        guard end >= 0 else { throw .lastError("find the end of", path: path) }
        guard let (code, written) = writeAll(fd, bytes) else { return }
        var error = FileError("write", path: path, code: code)
        if written > 0, ftruncate(fd, end) != 0 {
            let cut = errno
            error = FileError("write (and then remove the \(written) bytes written before the error: \(FileError.text(cut)))",
                              path: path, code: code)
        }
        throw error
    }

    /// fsync: what was appended survives a crash of the machine.
    public func sync() throws(FileError) {
        guard fd >= 0 else { throw FileError("fsync", path: path, code: EBADF) }
        while fsync(fd) != 0 {
            let code = errno
            if code != EINTR { throw FileError("fsync", path: path, code: code) }
        }
    }

    /// The file's size in bytes.
    public func size() throws(FileError) -> Int {
        var stats = stat()
        guard fstat(fd, &stats) == 0 else { throw .lastError("examine", path: path) }
        return Int(stats.st_size)
    }

    public func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }
}
