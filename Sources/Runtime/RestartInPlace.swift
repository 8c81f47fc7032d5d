#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Replaces this process with a fresh copy of itself: the same executable, arguments and
/// environment, and the same process ID, so a supervisor (systemd, Slurm, a `launch`) keeps
/// watching the same process and nothing it started is orphaned.
///
/// For a state a process cannot leave from inside: libnng 1.5.2's reaper thread stuck for good
/// (see `Socket.close(waitingAtMost:)`). A worker holds nothing that a restart loses: it joins
/// again and gets the weights with its first task.
public enum RestartInPlace {
    /// Counts the restarts of one process, so that a loop of them ends.
    static let countVariable = "CSPTRAIN_RESTARTED_IN_PLACE"

    /// How many times this process has restarted itself in place.
    public static var count: Int {
        ProcessInfo.processInfo.environment[countVariable].flatMap { Int($0) } ?? 0
    }

    /// Executes this program again; returns only if that failed (with the reason).
    public static func now() -> String {
        #if canImport(Glibc)
        setenv(countVariable, String(count + 1), 1)
        // The new program starts as a fresh one would: no signal blocked on this thread, the
        // termination signals at their defaults (its own start installs its handlers again).
        var none = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, nil)
        for signal in [SIGINT, SIGTERM, SIGHUP] { Glibc.signal(signal, SIG_DFL) }
        fflush(nil)  // every output stream
        // The executable's own path, so the process keeps its name ("exe" otherwise).
        let path = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? "/proc/self/exe"
        execv(path, CommandLine.unsafeArgv)
        return String(cString: strerror(errno))
        #else
        return "restarting in place is supported on Linux only"
        #endif
    }
}
