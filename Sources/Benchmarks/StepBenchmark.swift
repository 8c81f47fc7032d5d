import Foundation

/// One training step of a 10 M-parameter model on 2 workers (issue 11), end to end: csptrain
/// (`csptrain launch`, loadtest model, SGD, one micro-batch per worker) against what an MPI
/// data-parallel user runs (`MPI_Allreduce` + the same SGD update on every rank, TCP loopback)
/// and against the floor of csptrain's design, a raw nng star in C moving the same bytes in the
/// same pattern. Dense, then with a 90%-sparse broadcast. The peers live in scripts/bench/.
public enum StepBenchmark {
    public struct Settings: Sendable {
        public var parameters = 10_000_000
        public var workers = 2
        /// csptrain's run: steps in all, and the first ones left out of the timing.
        public var steps = 40
        public var warmupSteps = 8
        /// The C peers' timed and untimed steps.
        public var peerSteps = 30
        public var peerWarmup = 5
        public var sparsity = 0.9
        /// Where the peers' binaries are, and the script that builds them there.
        public var peers = ".build/bench-peers"
        public var buildScript = "scripts/bench/build.sh"
        /// csptrain's runs over tls+tcp:// with mutual TLS, from this certificate folder.
        public var tlsDir: String?
        public init() {}
    }

    public struct Row: Sendable {
        /// 0: dense broadcast.
        public var sparsity: Double
        /// The weights' sparsity csptrain reported over its timed steps.
        public var measuredSparsity: Double
        public var csptrain: StepTiming
        public var mpi: StepTiming?
        public var star: StepTiming?
        /// Issue 11's goal for csptrain / MPI, and the floor its traffic sets.
        public var goal: Double
        public var trafficFloor: Double

        public var ratioMPI: Double? { mpi.map { csptrain.median / $0.median } }
        public var ratioStar: Double? { star.map { csptrain.median / $0.median } }
        var name: String { sparsity == 0 ? "dense" : String(format: "%.0f%% sparse", 100 * sparsity) }
    }

    public struct Report: Sendable {
        public var settings: Settings
        public var rows: [Row]
        /// Peers skipped, and why.
        public var notes: [String]
    }

    public static func run(_ settings: Settings) throws -> Report {
        try ChildProcess.withScratch("step") { scratch in
            var notes: [String] = []
            let peers = preparePeers(settings, scratch: scratch, notes: &notes)
            var rows: [Row] = []
            for sparsity in [0, settings.sparsity] {
                let run = try LaunchedRun.run(yaml: configuration(settings, sparsity: sparsity), workers: settings.workers,
                                              scratch: scratch, label: sparsity == 0 ? "dense" : "sparse",
                                              extraArguments: settings.tlsDir.map { ["--tls", $0, "--require-client-cert"] } ?? [])
                let timed = run.metrics.filter { $0.step > settings.warmupSteps }
                guard !timed.isEmpty else {
                    throw BenchmarkError("csptrain's step run wrote \(run.metrics.count) steps, none after the \(settings.warmupSteps) warm-up steps")
                }
                let measured = timed.map(\.sparsity).reduce(0, +) / Double(timed.count)
                if sparsity > 0, measured < sparsity - 0.05 {
                    notes.append(String(format: "the sparse run's weights were only %.1f%% sparse (expected %.0f%%)", 100 * measured, 100 * sparsity))
                }
                var mpi: StepTiming?, star: StepTiming?
                if let binary = peers.mpi {
                    mpi = try peer(mpiCommand(settings, binary: binary, sparsity: sparsity), scratch: scratch,
                                   label: "mpi-\(sparsity)", notes: &notes)
                }
                if let binary = peers.star {
                    star = try peer([binary] + peerArguments(settings, sparsity: sparsity), scratch: scratch,
                                    label: "star-\(sparsity)", notes: &notes)
                }
                rows.append(Row(sparsity: sparsity, measuredSparsity: measured, csptrain: StepTiming(timed.map(\.stepSeconds)),
                                mpi: mpi, star: star, goal: sparsity == 0 ? 2.0 : 1.5, trafficFloor: sparsity == 0 ? 1.4 : 1.3))
            }
            return Report(settings: settings, rows: rows, notes: notes)
        }
    }

    /// The run: everything that is not the exchange costs (next to) nothing. Plain SGD without
    /// momentum or clipping, so the update is the peers' w -= lr · g / P.
    static func configuration(_ s: Settings, sparsity: Double) -> String {
        var yaml = """
            seed: 1
            steps: \(s.steps)
            model:
              kind: loadtest
              parameters: \(s.parameters)
            optimizer:
              kind: sgd
              learning_rate: 0.01
              momentum: 0
              clip_norm: 0
            coordinator:
              global_batch: \(s.workers)
              micro_batches: \(s.workers)
            checkpoint:
              every_steps: 0

            """
        // One-shot magnitude pruning at step 0: every timed step broadcasts the pruned weights.
        yaml += sparsity == 0 ? "pruning:\n  method: none\n" : """
            pruning:
              method: one-shot-magnitude
              schedule:
                kind: one-shot
                target: \(sparsity)
                start_step: 0

            """
        return yaml
    }

    static func peerArguments(_ s: Settings, sparsity: Double) -> [String] {
        ["--n", "\(s.parameters)", "--workers", "\(s.workers)", "--steps", "\(s.peerSteps)", "--warmup", "\(s.peerWarmup)"]
            + (sparsity > 0 ? ["--sparse", "\(sparsity)"] : [])
    }

    /// TCP over loopback, as csptrain's workers use: pml ob1 with only the tcp and self
    /// transports, so neither shared memory (vader) nor UCX is chosen. Processes are not pinned,
    /// as csptrain's are not.
    static func mpiCommand(_ s: Settings, binary: String, sparsity: Double) -> [String] {
        ["/usr/bin/env", "mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", "\(s.workers)",
         "--mca", "pml", "ob1", "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "lo",
         binary] + peerArguments(s, sparsity: sparsity)
    }

    /// Runs a peer and reads its JSON line; a failure becomes a note, not an error.
    static func peer(_ command: [String], scratch: URL, label: String, notes: inout [String]) throws -> StepTiming? {
        switch try peerLine(command, scratch: scratch, label: label) {
        case let .success(object):
            if let median = object["median_seconds"] as? Double, let p10 = object["p10_seconds"] as? Double,
               let p90 = object["p90_seconds"] as? Double {
                return StepTiming(median: median, p10: p10, p90: p90)
            }
            notes.append("\(label) skipped: its JSON line has no median_seconds, p10_seconds and p90_seconds")
        case let .failure(reason):
            notes.append("\(label) skipped: \(reason)")
        }
        return nil
    }

    /// Runs a C peer (its binary, or `/usr/bin/env` and a program) and returns the one JSON line it
    /// prints last, or why there is none.
    static func peerLine(_ command: [String], scratch: URL, label: String) throws -> Swift.Result<[String: Any], BenchmarkError> {
        let output = try ChildProcess.run(command[0], Array(command.dropFirst()), scratch: scratch, label: label)
        guard output.status == 0,
              let line = output.stdout.split(separator: "\n").last(where: { $0.hasPrefix("{") }),
              let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            let what = command[0] == "/usr/bin/env" ? command[1] : command[0]
            return .failure(BenchmarkError("\(what) exited with status \(output.status)"
                                           + (output.status == 127 ? " (not installed)" : "") + ": " + output.stderrTail))
        }
        return .success(object)
    }

    /// The peers' binaries, built by `settings.buildScript` when missing or older than their
    /// sources. nil: not available, with the reason in `notes`.
    static func preparePeers(_ s: Settings, scratch: URL, notes: inout [String]) -> (mpi: String?, star: String?) {
        let fm = FileManager.default
        let star = "\(s.peers)/nng_star", mpi = "\(s.peers)/mpi_step"
        let sources = URL(fileURLWithPath: s.buildScript).deletingLastPathComponent()
        func modified(_ path: String) -> Date? { (try? fm.attributesOfItem(atPath: path))?[.modificationDate] as? Date }
        let newestSource = ((try? fm.contentsOfDirectory(atPath: sources.path)) ?? [])
            .filter { $0.hasSuffix(".c") || $0.hasSuffix(".h") || $0.hasSuffix(".sh") }
            .compactMap { modified(sources.appendingPathComponent($0).path) }.max()
        let stale = [star, mpi].contains { path in
            guard let built = modified(path) else { return true }
            return newestSource.map { $0 > built } ?? false
        }
        if stale {
            do {
                let output = try ChildProcess.run("/usr/bin/env", ["bash", s.buildScript], scratch: scratch, label: "build-peers")
                notes += output.stdout.split(separator: "\n").filter { $0.contains("skipped") }.map(String.init)
                if output.status != 0 {
                    notes.append("building the C peers failed (\(s.buildScript), status \(output.status)): \(output.stderrTail)")
                }
            } catch {
                notes.append("cannot build the C peers with \(s.buildScript): \(error)")
            }
        }
        let available = { (path: String) in fm.isExecutableFile(atPath: path) ? path : nil }
        if available(mpi) == nil, !notes.contains(where: { $0.contains("MPI") }) {
            notes.append("MPI peer skipped: \(mpi) is missing (scripts/bench/build.sh builds it where mpicc is installed)")
        }
        if available(star) == nil { notes.append("raw star skipped: \(star) is missing (scripts/bench/build.sh needs libnng-dev)") }
        return (available(mpi), available(star))
    }
}

extension StepBenchmark.Report {
    /// The table `csptrain bench --only step` prints.
    public var lines: [String] {
        let s = settings
        let seconds = { (t: StepTiming?) in t.map { String(format: "%7.3f s (p10 %.3f, p90 %.3f)", $0.median, $0.p10, $0.p90) } ?? "skipped" }
        let ratio = { (r: Double?) in r.map { String(format: "%.2f×", $0) } ?? "-" }
        var out = ["step: \(s.parameters) parameters, \(s.workers) workers, SGD, one micro-batch per worker, TCP loopback; median seconds per step",
                   "  (csptrain: steps \(s.warmupSteps + 1)–\(s.steps) of `launch`; peers: \(s.peerSteps) steps after \(s.peerWarmup))"]
        for row in rows {
            out.append("  \(row.name) broadcast" + (row.sparsity > 0 ? String(format: " (csptrain's weights %.1f%% sparse)", 100 * row.measuredSparsity) : ""))
            out.append("    csptrain              " + seconds(row.csptrain))
            out.append("    MPI_Allreduce + SGD   " + seconds(row.mpi))
            out.append("    raw nng star          " + seconds(row.star))
            out.append("    csptrain / MPI        \(ratio(row.ratioMPI))   goal ≤ \(ratio(row.goal)), traffic floor ≈ \(ratio(row.trafficFloor))")
            out.append("    csptrain / raw star   \(ratio(row.ratioStar))")
        }
        return out + notes
    }

    public var json: [String: Any] {
        let optional = { (v: Any?) -> Any in v ?? NSNull() }
        return ["parameters": settings.parameters, "workers": settings.workers, "steps": settings.steps,
                "warmup_steps": settings.warmupSteps, "peer_steps": settings.peerSteps, "peer_warmup": settings.peerWarmup,
                "rows": rows.map { r in
                    ["sparsity": r.sparsity, "measured_sparsity": r.measuredSparsity, "csptrain": r.csptrain.json,
                     "mpi": optional(r.mpi?.json), "raw_star": optional(r.star?.json),
                     "ratio_mpi": optional(r.ratioMPI), "ratio_raw_star": optional(r.ratioStar),
                     "goal_ratio_mpi": r.goal, "traffic_floor_ratio_mpi": r.trafficFloor] as [String: Any]
                }]
    }
}
