#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// Replaces this process with a fresh copy of itself: the same executable, arguments and
/// environment, and the same process ID, so a supervisor (systemd, Slurm, a `launch`) keeps
/// watching the same process and nothing it started is orphaned.
///
/// For a state a process cannot leave from inside: libnng 1.5.2's reaper thread stuck for good
/// (see `Socket.close(waitingAtMost:)`). A worker holds nothing that a restart loses: it joins
/// again and gets the weights with its first task.
public enum RestartInPlace {
    /// The restarts of this process within the current hour and when that hour began:
    /// "COUNT:EPOCH_SECONDS", passed on through the environment.
    static let countVariable = "CSPTRAIN_RESTARTED_IN_PLACE"
    static let window = 3600.0

    private static let claimed = Atomic<Bool>(false)

    /// How many times this process has restarted itself in place (in all).
    public static var count: Int { parse().total }

    /// Restarts within the current hour.
    static var recentCount: Int {
        let (count, since, _) = parse()
        return Date().timeIntervalSince1970 - since < window ? count : 0
    }

    /// The first caller gets true; a restart happens at most once per process image.
    static func claim() -> Bool {
        !claimed.exchange(true, ordering: .acquiringAndReleasing)
    }

    private static func parse() -> (recent: Int, since: Double, total: Int) {
        let parts = (ProcessInfo.processInfo.environment[countVariable] ?? "").split(separator: ":")
        guard parts.count == 3, let recent = Int(parts[0]), let since = Double(parts[1]), let total = Int(parts[2]) else {
            return (0, Date().timeIntervalSince1970, 0)
        }
        return (recent, since, total)
    }

    /// Executes this program again; returns only if that failed (with the reason).
    public static func now() -> String {
        #if canImport(Glibc)
        let now = Date().timeIntervalSince1970
        var (recent, since, total) = parse()
        if now - since >= window { (recent, since) = (0, now) }
        setenv(countVariable, "\(recent + 1):\(Int(since)):\(total + 1)", 1)
        // No signal blocked on the new program's first thread (this one's mask is inherited);
        // dispositions stay as they are, as a fresh start from the same parent would find them.
        var none = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, nil)
        fflush(nil)  // every output stream
        // The executable's own path, so the process keeps its name ("exe" otherwise); once the
        // file has been replaced (an upgrade), the running image through /proc.
        var path = "/proc/self/exe"
        if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"),
           !target.hasSuffix(" (deleted)"), access(target, X_OK) == 0 {
            path = target
        }
        execv(path, CommandLine.unsafeArgv)
        return String(cString: strerror(errno))
        #else
        return "restarting in place is supported on Linux only"
        #endif
    }
}
