#if canImport(Glibc)
import Glibc
#endif

/// Standard output through write(2): a closed pipe (`csptrain ... | head -1`) is an error to
/// report, not a signal or a trap.
public enum StandardOutput {
    /// Ignores SIGPIPE for the whole process, so that writing to a closed pipe or socket fails
    /// with EPIPE instead of killing it. Call first thing in the executable.
    public static func ignoreBrokenPipeSignal() {
        signal(SIGPIPE, SIG_IGN)
    }

    public static func write(_ text: String) throws(FileError) {
        // Lines printed through Swift's print() sit in stdio's buffer: they go out first.
        fflush(nil)
        if let (code, _) = Array(text.utf8).withUnsafeBytes({ writeAll(STDOUT_FILENO, $0) }) {
            throw FileError("write", path: "standard output", code: code)
        }
    }
}

/// Standard error through write(2), for progress lines and messages. Best effort: when it is
/// closed there is nowhere left to report that.
public enum StandardError {
    public static func write(_ text: String) {
        _ = Array(text.utf8).withUnsafeBytes { writeAll(STDERR_FILENO, $0) }
    }
}
