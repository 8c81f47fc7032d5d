import Foundation
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The coordinator's HTTP endpoint during a real 2-worker run (tiny MLP): /metrics parsed by
/// Python's prometheus_client, and the live page in headless Chromium.
@Suite(.serialized, .timeLimit(.minutes(5))) struct ObserveTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static var python: String {
        let made = root.appendingPathComponent(".build/pyenv/bin/python").path
        return ProcessInfo.processInfo.environment["CSPTRAIN_PYTHON"]
            ?? (FileManager.default.isExecutableFile(atPath: made) ? made : "python3")
    }

    /// A run long enough to be watched: stopped with SIGINT once checked.
    func startRun(_ dir: URL, extra: [String] = []) throws -> Child {
        try Child(["launch", "--workers", "2", "--run-dir", dir.path, "--http", "127.0.0.1:0", "--steps", "100000",
                   "--set", "model.hidden_dim=64", "--set", "data.examples=4096", "--set", "coordinator.global_batch=64",
                   "--set", "coordinator.micro_batches=4", "--set", "checkpoint.every_steps=20",
                   "--set", "pruning.method=gradual-magnitude", "--set", "pruning.schedule.start_step=5",
                   "--set", "pruning.schedule.end_step=200", "--set", "pruning.schedule.interval=10",
                   "--set", "pruning.schedule.target=0.5"] + extra)
    }

    func check(_ mode: String, page: String, extra: [String] = [], seconds: Double = 90) async throws -> (Int32, [String: Any], String) {
        let script = Self.root.appendingPathComponent("scripts/check-observe.py").path
        let child = try Child(python: Self.python, [script, mode, page, "--workers", "2"] + extra)
        let (status, stdout, stderr) = await child.wait(seconds: seconds)
        let report = (try? JSONSerialization.jsonObject(with: Data(stdout.utf8)) as? [String: Any]) ?? [:]
        return (status, report, "\(stdout) \(stderr)")
    }

    @Test func prometheusSeriesOfATwoWorkerRun() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let run = try startRun(dir)
        let page = try await waitForFile(dir.appendingPathComponent("page"), seconds: 30)
        #expect(page.hasPrefix("http://127.0.0.1:"))
        try await waitForSteps(dir, 30)
        let (status, report, output) = try await check("metrics", page: page)
        #expect(status == 0, "check-observe.py metrics with \(Self.python): \(output) — scripts/test.sh installs prometheus_client into .build/pyenv")
        #expect((report["problems"] as? [String])?.isEmpty == true, "\(report["problems"] ?? output)")
        #expect((report["workers"] as? [String]) == ["worker-0", "worker-1"])

        run.signal(SIGINT)
        let (exit, _, stderr) = await run.wait(seconds: 60)
        #expect(exit == 130, "\(stderr)")
        #expect(stderr.contains("live page: http://127.0.0.1:"), "launch prints the page's URL")
    }

    @Test func bearerTokenGuardsEverythingButMetrics() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let tokenFile = dir.appendingPathComponent("http-token")
        try "s3cret-observer\n".write(to: tokenFile, atomically: true, encoding: .utf8)
        let run = try startRun(dir.appendingPathComponent("run"), extra: ["--set", "observe.token_file=\(tokenFile.path)"])
        let page = try await waitForFile(dir.appendingPathComponent("run/page"), seconds: 30)
        func status(_ path: String, _ authorization: String?) async throws -> Int {
            var request = URLRequest(url: URL(string: page + path)!)
            request.timeoutInterval = 15
            if let authorization { request.setValue(authorization, forHTTPHeaderField: "Authorization") }
            let (_, response) = try await URLSession.shared.data(for: request)
            return (response as? HTTPURLResponse)?.statusCode ?? -1
        }
        #expect(try await status("metrics", nil) == 200)
        #expect(try await status("api/status", nil) == 401)
        #expect(try await status("api/status", "Bearer wrong") == 401)
        #expect(try await status("api/status", "Bearer s3cret-observer") == 200)
        #expect(try await status("api/metrics?since=x", "Bearer s3cret-observer") == 400)
        #expect(try await status("nothing-here", "Bearer s3cret-observer") == 404)
        run.signal(SIGINT)
        let (exit, _, stderr) = await run.wait(seconds: 60)
        #expect(exit == 130, "\(stderr)")
    }

    @Test func jsonLogsAreOneObjectPerLine() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let run = try Child(["launch", "--workers", "1", "--run-dir", dir.path, "--steps", "3", "--log-format", "json",
                             "--config", Self.root.appendingPathComponent("Configs/local.yaml").path])
        let (status, _, stderr) = await run.wait(seconds: 60)
        #expect(status == 0, "\(stderr)")
        let lines = stderr.split(separator: "\n")
        #expect(!lines.isEmpty)
        var joined = false
        for line in lines {
            let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(object != nil, "not a JSON object: \(line)")
            guard let object else { continue }
            for key in ["timestamp", "level", "label", "message", "source", "file", "line"] { #expect(object[key] != nil, "\(key) in \(line)") }
            if object["message"] as? String == "worker joined" {
                joined = true
                #expect(object["worker"] as? String == "worker-0", "metadata fields are fields of the object")
            }
        }
        #expect(joined)
        let workerLog = try String(contentsOf: dir.appendingPathComponent("logs/worker-0.log"), encoding: .utf8)
        #expect(workerLog.split(separator: "\n").allSatisfy { $0.hasPrefix("{\"timestamp\":") }, "launch passes the format to its workers")
    }

    /// The live page in a real browser. Outside CI a machine without Chromium skips with a
    /// message; with CI=true that is a failure (scripts/install-deps.sh installs it).
    @Test func livePageInHeadlessChromium() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let run = try startRun(dir)
        defer { run.signal(SIGKILL) }
        let page = try await waitForFile(dir.appendingPathComponent("page"), seconds: 30)
        try await waitForSteps(dir, 10)
        let screenshot = dir.appendingPathComponent("live-page.png").path
        let (status, report, output) = try await check("browser", page: page, extra: ["--screenshot", screenshot], seconds: 120)
        if status == 77 {
            let message = "browser test skipped: \(report["skipped"] ?? output)"
            if ProcessInfo.processInfo.environment["CI"] == "true" {
                Issue.record("\(message); with CI=true a skip is a failure (scripts/install-deps.sh installs chromium and chromium-driver)")
            } else {
                print(message)
            }
        } else {
            #expect(status == 0, "check-observe.py browser: \(output)")
            #expect(FileManager.default.fileExists(atPath: screenshot), "the screenshot is saved into the run folder")
            if let keep = ProcessInfo.processInfo.environment["CSPTRAIN_KEEP_SCREENSHOT"], FileManager.default.fileExists(atPath: screenshot) {
                try? FileManager.default.removeItem(atPath: keep)
                try FileManager.default.copyItem(atPath: screenshot, toPath: keep)
            }
        }
        run.signal(SIGINT)
        _ = await run.wait(seconds: 60)
    }
}
