import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The coordinator's memory as the load on it grows (issue 11): its resident set with 1 worker
/// against 8, on a small loadtest model, and the bound RSS(8) ≤ RSS(1) + 2 × the model's bytes.
/// `csptrain launch` runs the coordinator in its own process, so the launch process's
/// /proc/<pid>/status is the coordinator's (the workers are separate processes).
public enum MemoryBenchmark {
    /// What loads the coordinator; each is one `csptrain launch`, sampled the same way.
    /// Hook: issue 11's second case, 200 work requests in flight from one member, joins as
    /// `case requestsInFlight(Int)` once the coordinator has a way to be driven so (a test
    /// client or a launch option); `run` then needs only its configuration and worker count.
    public enum Load: Sendable, CustomStringConvertible {
        case workers(Int)

        public var description: String {
            switch self {
            case let .workers(n): "\(n) worker\(n == 1 ? "" : "s")"
            }
        }

        var workerCount: Int {
            switch self {
            case let .workers(n): n
            }
        }
    }

    public struct Settings: Sendable {
        public var parameters = 1_000_000
        public var steps = 30
        /// Micro-batches per step, the same for every load, so only the number of workers varies.
        public var microBatches = 8
        public var loads: [Load] = [.workers(1), .workers(8)]
        public init() {}
    }

    public struct Row: Sendable {
        public var load: Load
        /// VmHWM: the coordinator process's peak resident set, last seen before it exited.
        public var peakBytes: Int
        /// The largest VmRSS sampled (every 20 ms).
        public var largestSampledBytes: Int
        public var stepSeconds: Double
    }

    public struct Report: Sendable {
        public var settings: Settings
        public var rows: [Row]
        public var modelBytes: Int { settings.parameters * MemoryLayout<Float>.size }

        /// RSS(most workers) − RSS(1 worker), against the allowed 2 × model bytes; nil without
        /// both rows.
        public var growth: (bytes: Int, allowed: Int, holds: Bool)? {
            guard let one = rows.first(where: { $0.load.workerCount == 1 }),
                  let most = rows.filter({ $0.load.workerCount > 1 }).max(by: { $0.load.workerCount < $1.load.workerCount }) else { return nil }
            let bytes = most.peakBytes - one.peakBytes, allowed = 2 * modelBytes
            return (bytes, allowed, bytes <= allowed)
        }
    }

    public static func run(_ settings: Settings) throws -> Report {
        try ChildProcess.withScratch("memory") { scratch in
            var rows: [Row] = []
            for (i, load) in settings.loads.enumerated() {
                var peak = 0, largest = 0
                let run = try LaunchedRun.run(yaml: configuration(settings), workers: load.workerCount, scratch: scratch,
                                              label: "load-\(i)") { pid in
                    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return }
                    if let hwm = kilobytes(status, "VmHWM:") { peak = max(peak, hwm * 1024) }
                    if let rss = kilobytes(status, "VmRSS:") { largest = max(largest, rss * 1024) }
                }
                let seconds = run.metrics.map(\.stepSeconds).sorted()
                rows.append(Row(load: load, peakBytes: peak, largestSampledBytes: largest,
                                stepSeconds: seconds.isEmpty ? .nan : seconds[seconds.count / 2]))
            }
            return Report(settings: settings, rows: rows)
        }
    }

    static func configuration(_ s: Settings) -> String {
        """
        seed: 1
        steps: \(s.steps)
        model:
          kind: loadtest
          parameters: \(s.parameters)
        optimizer:
          kind: sgd
        coordinator:
          global_batch: \(s.microBatches)
          micro_batches: \(s.microBatches)
        checkpoint:
          every_steps: 0
        pruning:
          method: none

        """
    }

    /// The value of a "Name:   1234 kB" line of /proc/<pid>/status.
    static func kilobytes(_ status: String, _ name: String) -> Int? {
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name) }) else { return nil }
        return line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) }
    }
}

extension MemoryBenchmark.Report {
    public var lines: [String] {
        let mib = { (b: Int) in String(format: "%.1f MiB", Double(b) / 1048576) }
        var out = ["memory: the coordinator's resident set (`launch` process), loadtest \(settings.parameters) parameters (\(mib(modelBytes))), \(settings.steps) steps of \(settings.microBatches) micro-batches"]
        for r in rows {
            out.append("  " + r.load.description.padding(toLength: 12, withPad: " ", startingAt: 0)
                       + "  peak (VmHWM) \(mib(r.peakBytes)), largest sampled VmRSS \(mib(r.largestSampledBytes)), median step \(String(format: "%.3f", r.stepSeconds)) s")
        }
        if let g = growth {
            out.append("  bound RSS(\(rows.map(\.load.workerCount).max() ?? 0)) ≤ RSS(1) + 2 × model bytes: grew \(mib(g.bytes)), allowed \(mib(g.allowed)): \(g.holds ? "holds" : "EXCEEDED")")
        }
        return out
    }

    public var json: [String: Any] {
        var object: [String: Any] = [
            "parameters": settings.parameters, "model_bytes": modelBytes, "steps": settings.steps,
            "rows": rows.map { r in
                ["load": r.load.description, "workers": r.load.workerCount, "peak_rss_bytes": r.peakBytes,
                 "largest_sampled_rss_bytes": r.largestSampledBytes, "median_step_seconds": r.stepSeconds] as [String: Any]
            },
        ]
        if let g = growth { object["bound"] = ["growth_bytes": g.bytes, "allowed_bytes": g.allowed, "holds": g.holds] }
        return object
    }
}
