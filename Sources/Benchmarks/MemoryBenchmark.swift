import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The coordinator's memory as the load on it grows (issue 11): its resident set with 1 worker
/// against 8, and with 1 worker while one more member floods it with work requests, on a small
/// loadtest model; the bound for each is RSS ≤ RSS(1) + 2 × the model's bytes.
/// `csptrain launch` runs the coordinator in its own process, so the launch process's
/// /proc/<pid>/status is the coordinator's (the workers are separate processes).
public enum MemoryBenchmark {
    /// What loads the coordinator; each is one `csptrain launch`, sampled the same way.
    public enum Load: Sendable, CustomStringConvertible {
        case workers(Int)
        /// One worker, and a member (``FloodClient``) that joins and sends this many work
        /// requests at once (weights_version 0: each task would carry the whole model), a few
        /// rounds in a row, then leaves.
        case requestsInFlight(Int)

        public var description: String {
            switch self {
            case let .workers(n): "\(n) worker\(n == 1 ? "" : "s")"
            case let .requestsInFlight(n): "\(n) in flight"
            }
        }

        var workerCount: Int {
            switch self {
            case let .workers(n): n
            case .requestsInFlight: 1
            }
        }
    }

    public struct Settings: Sendable {
        public var parameters = 1_000_000
        public var steps = 30
        /// Micro-batches per step, the same for every load, so only the number of workers varies.
        public var microBatches = 8
        public var loads: [Load] = [.workers(1), .workers(8), .requestsInFlight(200)]
        /// Floods of `requestsInFlight` sent one after another (each waits for every reply).
        public var floodRounds = 5
        /// Launches per load, taken in turn (1 worker, 8, flood, 1, 8, …); the bounds compare
        /// medians. On this shared 2-core VM one launch's peak differed from the next one's of the
        /// same load by up to 21 MiB, nearly three times the bound itself.
        public var repeats = 5
        public init() {}
    }

    public struct Row: Sendable {
        public var load: Load
        /// VmHWM: the coordinator process's peak resident set, last seen before it exited.
        public var peakBytes: Int
        /// The largest VmRSS sampled (every 20 ms).
        public var largestSampledBytes: Int
        public var stepSeconds: Double
        /// How the flood was answered (`requestsInFlight` only).
        var flood: FloodClient.Tally?
    }

    public struct Report: Sendable {
        public var settings: Settings
        public var rows: [Row]
        public var modelBytes: Int { settings.parameters * MemoryLayout<Float>.size }

        /// The median peak of each load's launches, in the order of `settings.loads`.
        public var medians: [(load: Load, peakBytes: Int)] {
            settings.loads.map { load in
                let peaks = rows.filter { $0.load.description == load.description }.map(\.peakBytes).sorted()
                return (load, peaks.isEmpty ? 0 : peaks[peaks.count / 2])
            }
        }

        /// For each load but the 1-worker one: median RSS(load) − median RSS(1 worker), against
        /// the allowed 2 × model bytes; empty without a 1-worker load.
        public var bounds: [(load: Load, bytes: Int, allowed: Int, holds: Bool)] {
            guard let one = medians.first(where: { if case .workers(1) = $0.load { true } else { false } }) else { return [] }
            return medians.compactMap { m in
                if case .workers(1) = m.load { return nil }
                let bytes = m.peakBytes - one.peakBytes, allowed = 2 * modelBytes
                return (m.load, bytes, allowed, bytes <= allowed)
            }
        }
    }

    public static func run(_ settings: Settings) throws -> Report {
        let rows = try ChildProcess.withScratch("memory") { scratch in
            try (0 ..< max(1, settings.repeats)).flatMap { round in
                try settings.loads.enumerated().map { i, load in try measure(load, settings, scratch: scratch, label: "load-\(i)-\(round)") }
            }
        }
        return Report(settings: settings, rows: rows)
    }

    static func measure(_ load: Load, _ settings: Settings, scratch: URL, label: String) throws -> Row {
        var flood: Task<FloodClient.Tally, Error>?
        if case let .requestsInFlight(n) = load {
            let folder = scratch.appendingPathComponent(label), rounds = settings.floodRounds
            flood = Task.detached { try await floodWhileTraining(folder: folder, requests: n, rounds: rounds) }
        }
        var peak = 0, largest = 0
        let run: LaunchedRun
        do {
            run = try LaunchedRun.run(yaml: configuration(settings), workers: load.workerCount, scratch: scratch, label: label) { pid in
                guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return }
                if let hwm = kilobytes(status, "VmHWM:") { peak = max(peak, hwm * 1024) }
                if let rss = kilobytes(status, "VmRSS:") { largest = max(largest, rss * 1024) }
            }
        } catch {
            flood?.cancel()
            throw error
        }
        let seconds = run.metrics.map(\.stepSeconds).sorted()
        var row = Row(load: load, peakBytes: peak, largestSampledBytes: largest,
                      stepSeconds: seconds.isEmpty ? .nan : seconds[seconds.count / 2])
        if let flood { row.flood = try wait(for: flood) }
        return row
    }

    /// Waits for the run folder's endpoint and token, joins, and floods `rounds` times; then
    /// leaves (closing the connection hands back the micro-batch it was last given).
    static func floodWhileTraining(folder: URL, requests: Int, rounds: Int) async throws -> FloodClient.Tally {
        let deadline = Date().addingTimeInterval(60)
        var endpoint = "", token = ""
        while endpoint.isEmpty || token.isEmpty {
            guard Date() < deadline else { throw BenchmarkError("memory: no endpoint and token in \(folder.path) within 60 s") }
            try await Task.sleep(for: .milliseconds(10))
            let read = { (name: String) in
                ((try? String(contentsOf: folder.appendingPathComponent(name), encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            }
            endpoint = read("endpoint")
            token = read("token")
        }
        let client = try await FloodClient.join(url: endpoint, token: Array(token.utf8))
        defer { client.close() }
        var total = FloodClient.Tally()
        for _ in 0 ..< rounds { total.add(try await client.flood(requests)) }
        return total
    }

    /// The result of a task the launch ran beside, waited for from this (blocking) thread.
    static func wait<T: Sendable>(for task: Task<T, Error>) throws -> T {
        let done = DispatchSemaphore(value: 0)
        let box = ResultBox<T>()
        Task.detached {
            let result = await task.result
            box.set(result)
            done.signal()
        }
        guard done.wait(timeout: .now() + 60) == .success, let result = box.get() else {
            throw BenchmarkError("memory: the flood did not finish within 60 s of the run's end")
        }
        return try result.get()
    }

    final class ResultBox<T: Sendable>: @unchecked Sendable {
        private let lock = NSLock()
        private var value: Result<T, Error>?
        func set(_ v: Result<T, Error>) { lock.lock(); value = v; lock.unlock() }
        func get() -> Result<T, Error>? { lock.lock(); defer { lock.unlock() }; return value }
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
            out.append("  " + r.load.description.padding(toLength: 15, withPad: " ", startingAt: 0)
                       + "  peak (VmHWM) \(mib(r.peakBytes)), largest sampled VmRSS \(mib(r.largestSampledBytes)), median step \(String(format: "%.3f", r.stepSeconds)) s")
            if let f = r.flood, case let .requestsInFlight(n) = r.load {
                out.append("                   \(settings.floodRounds) floods of \(n) work requests (1 worker beside): \(f.tasks) tasks, \(f.waits) waits, \(f.overloaded) refused as overloaded, \(f.other) other; \(mib(f.replyBytes)) of replies")
            }
        }
        if settings.repeats > 1 {
            out.append("  median peaks of \(settings.repeats) launches: " + medians.map { "\($0.load) \(mib($0.peakBytes))" }.joined(separator: ", "))
        }
        for b in bounds {
            out.append("  bound median RSS(\(b.load)) ≤ median RSS(1 worker) + 2 × model bytes: grew \(mib(b.bytes)), allowed \(mib(b.allowed)): \(b.holds ? "pass" : "FAIL")")
        }
        return out
    }

    public var json: [String: Any] {
        let object: [String: Any] = [
            "parameters": settings.parameters, "model_bytes": modelBytes, "steps": settings.steps, "repeats": settings.repeats,
            "median_peak_rss_bytes": medians.map { ["load": $0.load.description, "bytes": $0.peakBytes] as [String: Any] },
            "rows": rows.map { r in
                var row: [String: Any] = ["load": r.load.description, "workers": r.load.workerCount, "peak_rss_bytes": r.peakBytes,
                                          "largest_sampled_rss_bytes": r.largestSampledBytes, "median_step_seconds": r.stepSeconds]
                if let f = r.flood, case let .requestsInFlight(n) = r.load {
                    row["flood"] = ["requests": n, "rounds": settings.floodRounds, "tasks": f.tasks, "waits": f.waits,
                                    "overloaded": f.overloaded, "other": f.other, "reply_bytes": f.replyBytes]
                }
                return row
            },
            "bounds": bounds.map { b in
                ["load": b.load.description, "growth_bytes": b.bytes, "allowed_bytes": b.allowed, "holds": b.holds] as [String: Any]
            },
        ]
        return object
    }
}
