import Foundation
import Runtime

#if canImport(Glibc)
import Glibc
#endif

/// A child process of a benchmark that measures whole programs (`csptrain launch`, the C peers).
/// Its output goes to files in a scratch folder rather than pipes, so a chatty child never
/// blocks on a full pipe while the benchmark polls it.
struct ChildProcess {
    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String

        /// The last lines of stderr, for an error message.
        var stderrTail: String { stderr.split(separator: "\n").suffix(8).joined(separator: "\n") }
    }

    /// Runs `executable` with `arguments` to its end. `poll`, when given, is called with the
    /// child's pid every `interval` seconds while it runs (to sample /proc/<pid>/status).
    static func run(_ executable: String, _ arguments: [String], scratch: URL, label: String,
                    interval: Double = 0.02, poll: ((pid_t) -> Void)? = nil) throws -> Output {
        let outURL = scratch.appendingPathComponent("\(label).stdout")
        let errURL = scratch.appendingPathComponent("\(label).stderr")
        for url in [outURL, errURL] {
            guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
                throw BenchmarkError("cannot create \(url.path)")
            }
        }
        let out = try FileHandle(forWritingTo: outURL), err = try FileHandle(forWritingTo: errURL)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch {
            try? out.close(); try? err.close()
            throw BenchmarkError("cannot run \(executable): \(error.localizedDescription)")
        }
        try out.close(); try err.close()  // the child holds its own copies
        if let poll {
            let pid = process.processIdentifier
            while process.isRunning {
                poll(pid)
                Thread.sleep(forTimeInterval: interval)
            }
        }
        process.waitUntilExit()
        return Output(status: process.terminationStatus,
                      stdout: try String(contentsOf: outURL, encoding: .utf8),
                      stderr: (try? String(contentsOf: errURL, encoding: .utf8)) ?? "")
    }

    /// A scratch folder under the system's temporary directory, removed by `body`'s end.
    static func withScratch<T>(_ name: String, _ body: (URL) throws -> T) throws -> T {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("csptrain-bench-\(name)-\(getpid())")
        try? FileManager.default.removeItem(at: folder)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        return try body(folder)
    }
}

/// `csptrain launch` of a generated configuration, run by this same executable, and what it left
/// in its run folder.
struct LaunchedRun {
    var summary: RunSummary
    var metrics: [StepMetrics]

    /// `yaml` is the whole configuration; the run folder is `scratch/label`. `poll` as in
    /// `ChildProcess.run`: the launch process is the coordinator.
    static func run(yaml: String, workers: Int, scratch: URL, label: String, extraArguments: [String] = [],
                    poll: ((pid_t) -> Void)? = nil) throws -> LaunchedRun {
        let config = scratch.appendingPathComponent("\(label).yaml")
        try yaml.write(to: config, atomically: true, encoding: .utf8)
        let folder = RunFolder(scratch.appendingPathComponent(label).path)
        let output = try ChildProcess.run(Launcher.executablePath,
                                          ["launch", "--workers", "\(workers)", "--config", config.path, "--run-dir", folder.url.path,
                                           "--json", "--log-level", "warning"] + extraArguments,
                                          scratch: scratch, label: label, poll: poll)
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        guard output.status == 0, let line = output.stdout.split(separator: "\n").last,
              let summary = try? decoder.decode(RunSummary.self, from: Data(line.utf8)), summary.status == .completed else {
            throw BenchmarkError("csptrain launch (\(label)) exited with status \(output.status): \(output.stdout)\n\(output.stderrTail)")
        }
        let text = try String(contentsOf: folder.metricsFile, encoding: .utf8)
        let metrics = try text.split(separator: "\n").map { try decoder.decode(StepMetrics.self, from: Data($0.utf8)) }
        return LaunchedRun(summary: summary, metrics: metrics)
    }
}

/// Seconds per step: median and the 10th and 90th percentiles (linear interpolation, as the C
/// peers compute them).
public struct StepTiming: Sendable {
    public var median: Double
    public var p10: Double
    public var p90: Double

    init(_ seconds: [Double]) {
        let sorted = seconds.sorted()
        func quantile(_ q: Double) -> Double {
            guard !sorted.isEmpty else { return .nan }
            let position = q * Double(sorted.count - 1)
            let below = Int(position)
            guard below < sorted.count - 1 else { return sorted[sorted.count - 1] }
            return sorted[below] + (position - Double(below)) * (sorted[below + 1] - sorted[below])
        }
        median = quantile(0.5)
        p10 = quantile(0.1)
        p90 = quantile(0.9)
    }

    init(median: Double, p10: Double, p90: Double) {
        self.median = median
        self.p10 = p10
        self.p90 = p90
    }

    var json: [String: Any] { ["median_seconds": median, "p10_seconds": p10, "p90_seconds": p90] }
}

public struct BenchmarkError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
