#if canImport(Glibc)
import Glibc
#endif

/// The one loop every write goes through: all of the bytes, through short writes and EINTR.
/// Returns nil when everything was written, else the errno (and how much was written before it).
func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> (code: Int32, written: Int)? {
    var written = 0
    while written < bytes.count {
        let n = write(fd, bytes.baseAddress! + written, bytes.count - written)
        if n < 0 {
            let code = errno
            if code == EINTR { continue }
            return (code, written)
        }
        // write(2) returns 0 for a non-empty buffer only on exotic files; report it as an I/O error.
        if n == 0 { return (EIO, written) }
        written += n
    }
    return nil
}

/// Writes all of `bytes` to an open descriptor (a lock file, a pipe); the error names `path`.
public enum Descriptor {
    public static func write(_ fd: Int32, _ bytes: [UInt8], path: String) throws(FileError) {
        if let (code, _) = bytes.withUnsafeBytes({ writeAll(fd, $0) }) { throw FileError("write", path: path, code: code) }
    }
}

/// open(2), retried on EINTR; the error names the file.
func openFile(_ path: String, _ flags: Int32, mode: mode_t = 0o644, operation: String = "open") throws(FileError) -> Int32 {
    while true {
        let fd = open(path, flags | O_CLOEXEC, mode)
        if fd >= 0 { return fd }
        let code = errno
        if code != EINTR { throw FileError(operation, path: path, code: code) }
    }
}

/// Whole-file writes: to a temporary file, fsynced, renamed over the target, the folder
/// fsynced. A crash at any moment leaves either the old file or the new one, never a torn one.
public enum AtomicFile {
    /// `path + ".tmp"` is the temporary file (removed when the write fails). `mode` is applied
    /// whatever the umask (0600 for the run token).
    public static func write(_ bytes: [UInt8], to path: String, mode: mode_t = 0o644) throws(FileError) {
        let temp = path + ".tmp"
        let fd = try openFile(temp, O_WRONLY | O_CREAT | O_TRUNC, mode: mode, operation: "create")
        var failure: FileError?
        if fchmod(fd, mode) != 0 {
            failure = .lastError("set the mode of", path: temp)
        } else if let (code, _) = bytes.withUnsafeBytes({ writeAll(fd, $0) }) {
            failure = FileError("write", path: temp, code: code)
        } else if fsync(fd) != 0 {
            failure = .lastError("fsync", path: temp)
        }
        // NFS reports some write errors only at close.
        if close(fd) != 0, failure == nil { failure = .lastError("close", path: temp) }
        if let failure {
            unlink(temp)
            throw failure
        }
        if rename(temp, path) != 0 {
            let error = FileError.lastError("rename \(temp) to", path: path)
            unlink(temp)
            throw error
        }
        try syncFolder(of: path)
    }

    public static func write(_ text: String, to path: String, mode: mode_t = 0o644) throws(FileError) {
        try write(Array(text.utf8), to: path, mode: mode)
    }

    /// Gives the complete file `source` a second name, `path`, atomically: a hard link under a
    /// temporary name renamed over `path`, the folder fsynced (no byte is copied). Where the file
    /// system has no hard links, a copy written as ``write(_:to:mode:)`` writes.
    public static func link(_ source: String, to path: String) throws(FileError) {
        let temp = path + ".tmp"
        unlink(temp)
        if Glibc.link(source, temp) != 0 {
            let code = errno
            guard code == EPERM || code == EOPNOTSUPP || code == EXDEV || code == EMLINK else {
                throw FileError("link \(source) as", path: temp, code: code)
            }
            try write(try FileReader.read(source), to: path)
            return
        }
        if rename(temp, path) != 0 {
            let error = FileError.lastError("rename \(temp) to", path: path)
            unlink(temp)
            throw error
        }
        try syncFolder(of: path)
    }

    /// fsyncs the folder holding `path`, so that a rename or a new file in it survives a crash.
    public static func syncFolder(of path: String) throws(FileError) {
        let folder = parent(of: path)
        let fd = try openFile(folder, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        // Some file systems (FUSE, some network ones) cannot fsync a folder: nothing to do there.
        if fsync(fd) != 0 {
            let code = errno
            if code != EINVAL { throw FileError("fsync the folder", path: folder, code: code) }
        }
    }

    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }
}

/// Whole-file reads whose errors carry the errno.
public enum FileReader {
    public static func read(_ path: String) throws(FileError) -> [UInt8] {
        let fd = try openFile(path, O_RDONLY)
        defer { close(fd) }
        var out: [UInt8] = []
        var stats = stat()
        if fstat(fd, &stats) == 0, stats.st_size > 0 { out.reserveCapacity(Int(stats.st_size)) }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .lastError("read", path: path)
            }
            if n == 0 { return out }
            out.append(contentsOf: buffer[..<n])
        }
    }

    public static func readText(_ path: String) throws(FileError) -> String {
        String(decoding: try read(path), as: UTF8.self)
    }
}

public enum Folder {
    /// mkdir -p. Returns the folders it made, outermost first (nothing when `path` existed).
    @discardableResult
    public static func create(_ path: String, mode: mode_t = 0o755) throws(FileError) -> [String] {
        var missing: [String] = []
        var candidate = path
        while !candidate.isEmpty, candidate != "/", access(candidate, F_OK) != 0 {
            missing.append(candidate)
            candidate = AtomicFile.parent(of: candidate)
        }
        var made: [String] = []
        for folder in missing.reversed() {
            if mkdir(folder, mode) != 0 {
                let code = errno
                if code == EEXIST { continue }   // made meanwhile by someone else: not ours
                throw FileError("create the folder", path: folder, code: code)
            }
            made.append(folder)
        }
        var stats = stat()
        if stat(path, &stats) != 0 { throw .lastError("examine", path: path) }
        if stats.st_mode & S_IFMT != S_IFDIR { throw FileError("use as a folder", path: path, code: ENOTDIR) }
        return made
    }

    /// rm -r: removes `path`, and when it is a folder everything in it. A missing path is fine.
    public static func removeTree(_ path: String) throws(FileError) {
        var stats = stat()
        if lstat(path, &stats) != 0 {
            if errno == ENOENT { return }
            throw .lastError("examine", path: path)
        }
        if stats.st_mode & S_IFMT == S_IFDIR {
            for name in try names(in: path) { try removeTree(path + "/" + name) }
            if rmdir(path) != 0 { throw .lastError("remove the folder", path: path) }
        } else if unlink(path) != 0, errno != ENOENT {
            throw .lastError("remove", path: path)
        }
    }

    /// The names in a folder, without "." and "..".
    public static func names(in path: String) throws(FileError) -> [String] {
        guard let dir = opendir(path) else { throw .lastError("list", path: path) }
        defer { closedir(dir) }
        var out: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != ".", name != ".." { out.append(name) }
        }
        return out
    }
}
