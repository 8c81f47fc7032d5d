import FileIO
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Step, loss, throughput and workers on the terminal: one updating line on a TTY, a line every
/// few percent of the run otherwise (so logs stay readable).
public final class ProgressDisplay: Sendable {
    private let enabled: Bool
    private let tty: Bool
    private let state: Mutex<(workers: Int, lineOpen: Bool, lastPrinted: Int)>

    public init(enabled: Bool) {
        self.enabled = enabled
        tty = isatty(STDERR_FILENO) == 1
        state = Mutex((0, false, -1))
    }

    public func handle(_ event: ProgressEvent) {
        guard enabled else { return }
        switch event {
        case let .membership(workers):
            state.withLock { $0.workers = workers }
        case let .step(m, total):
            var line = String(format: "step %d/%d  loss %.4f  %.0f examples/s  workers %d",
                              m.step, total, m.loss, m.examplesPerSecond, m.workers)
            if m.sparsity > 0 { line += String(format: "  sparsity %.1f%% (projection %.0f ms)", 100 * m.sparsity, 1000 * m.projectionSeconds) }
            if let wer = m.validWer { line += String(format: "  valid WER %.2f%%", 100 * wer) }
            if let wer = m.validWerChannel { line += String(format: " (channel %.2f%%)", 100 * wer) }
            if let wer = m.validWerSeen { line += String(format: ", training voices %.2f%%", 100 * wer) }
            state.withLock { s in
                if tty {
                    StandardError.write("\r\u{1B}[K" + line)
                    s.lineOpen = true
                } else if m.step == total || m.step == 1 || m.validWer != nil || m.step - s.lastPrinted >= max(1, total / 20) {
                    StandardError.write(line + "\n")
                    s.lastPrinted = m.step
                }
            }
        }
    }

    /// Ends an open progress line so that the next message starts on its own line.
    public func finishLine() {
        state.withLock { s in
            if s.lineOpen { StandardError.write("\n"); s.lineOpen = false }
        }
    }
}

/// What the coordinator reports to a progress display.
public enum ProgressEvent: Sendable {
    case step(StepMetrics, total: Int)
    case membership(workers: Int)
}
