import Checkpoints
import Coordination
import FileIO
import Foundation
import Synchronization
import Testing
@testable import Runtime

/// A full disk (a 64 KiB tmpfs): errors name the errno, the file and the disk; metrics and
/// ledger lines wait in memory and arrive, in order, once space returns; a checkpoint that does
/// not fit is reported with its file and the disk, and `latest` stays on the last good one.
@Suite(.enabled(if: ScratchDisk.available, ScratchDisk.skipReason))
struct FullDiskTests {
    @Test func theAppenderReportsTheFullDiskAndLeavesNoTornLine() throws {
        let disk = try ScratchDisk(bytes: 64 << 10)
        let path = disk.path + "/lines.txt"
        let file = try FileAppender(path: path)
        let line = String(repeating: "x", count: 999) + "\n"
        var written = 0
        let error = #expect(throws: FileError.self) {
            while written < 1000 { try file.append(line); written += 1 }
        }
        #expect(written > 10 && written < 70)
        #expect(error?.code == ENOSPC && error?.isNoSpace == true)
        #expect(error?.disk?.mountPoint == disk.path && error?.disk?.type == "tmpfs")
        #expect(error?.description.hasPrefix("cannot write \(path): No space left on device (errno 28); the file system: \(disk.path) (tmpfs") == true)
        // All or nothing: a line cut short by the full disk was removed again.
        #expect(try file.size() == written * 1000)
    }

    @Test func metricsLinesWaitForSpaceAndArriveInOrder() throws {
        let disk = try ScratchDisk(bytes: 64 << 10)
        let filler = disk.path + "/filler"
        try Data(count: 32 << 10).write(to: URL(fileURLWithPath: filler))
        let url = URL(fileURLWithPath: disk.path + "/metrics.jsonl")
        let writer = try MetricsWriter(file: url, truncate: true)
        var step = 0
        var firstFailure: Int?
        while step < 2000, firstFailure.map({ step < $0 + 20 }) ?? true {
            step += 1
            do { try writer.write(Self.metrics(step: step)) } catch let error as LineWriteError {
                #expect(error.cause.isNoSpace && error.cause.path == url.path)
                #expect(error.description.contains("No space left on device") && error.description.contains("held in memory"))
                if firstFailure == nil { firstFailure = step }
            }
        }
        let first = try #require(firstFailure, "the disk never filled")
        #expect(writer.backlog.heldLines == step - first + 1 && writer.backlog.droppedLines == 0)
        #expect(throws: LineWriteError.self) { try writer.flushBacklog() }

        try FileManager.default.removeItem(atPath: filler)
        try writer.flushBacklog()
        #expect(writer.backlog.heldLines == 0)
        let steps = try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map { line in
            (try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["step"] as? Int
        }
        #expect(steps == (1 ... step).map { $0 })
    }

    @Test func ledgerLinesWaitForSpaceAndTheEpochIsNotSyncedIncomplete() throws {
        let disk = try ScratchDisk(bytes: 64 << 10)
        let filler = disk.path + "/filler"
        try Data(count: 32 << 10).write(to: URL(fileURLWithPath: filler))
        let ledger = LedgerFiles(folder: URL(fileURLWithPath: disk.path + "/ledger"))
        let examples = Array(0 ..< 64)
        var step = 0
        var failed = 0
        while failed < 5, step < 2000 {
            step += 1
            do { try ledger.append([RunLedger.Step(step: step, epoch: 0, examples: examples)]) } catch { failed += 1 }
        }
        #expect(failed == 5 && ledger.backlog.heldLines == 5)
        let incomplete = #expect(throws: LineWriteError.self) { try ledger.syncFile(epoch: 0) }
        #expect(incomplete?.cause.isNoSpace == true)

        try FileManager.default.removeItem(atPath: filler)
        try ledger.append([RunLedger.Step(step: step + 1, epoch: 0, examples: examples)])
        try ledger.syncFile(epoch: 0)
        let lines = try String(contentsOf: ledger.file(epoch: 0), encoding: .utf8).split(separator: "\n")
        #expect(lines.map(String.init) == (1 ... step + 1).map { LedgerFiles.line(RunLedger.Step(step: $0, epoch: 0, examples: examples)).dropLast() }.map(String.init))
    }

    @Test func aCheckpointThatDoesNotFitIsReportedWithTheFileAndTheDisk() async throws {
        let disk = try ScratchDisk(bytes: 64 << 10)
        let store = CheckpointStore(runDirectory: URL(fileURLWithPath: disk.path), keep: 3)
        let writer = CheckpointWriter(store: store)
        let reports = Mutex<[CheckpointWriteReport]>([])
        for (step, count) in [(1, 100), (2, 100_000)] {
            writer.submit(Self.checkpoint(step: step, values: count)) { report in reports.withLock { $0.append(report) } }
            await writer.flush()
        }
        let all = reports.withLock { $0 }
        #expect(all.map(\.step) == [1, 2])
        guard case let .written(url) = all[0].outcome else { Issue.record("step 1: \(all[0].outcome)"); return }
        guard case let .failed(failure) = all[1].outcome else { Issue.record("step 2: \(all[1].outcome)"); return }
        #expect(failure.code == ENOSPC && failure.isNoSpace && failure.reason == "No space left on device")
        #expect(failure.path == store.path(forStep: 2).path + ".tmp")
        #expect(failure.disk?.mountPoint == disk.path && failure.disk?.type == "tmpfs" && failure.disk?.totalBytes == 64 << 10)
        #expect(failure.description.hasPrefix("checkpoint of step 2 not written: cannot write \(failure.path): No space left on device (errno 28); the disk: \(disk.path) (tmpfs"))
        let stop = failure.stopMessage(failuresInARow: 3, newest: store.latestPath())
        #expect(stop.contains("3 checkpoint writes in a row failed") && stop.contains(url.path) && stop.contains("free space on \(disk.path)"))
        // The failed write left nothing behind, and `latest` still names the last complete checkpoint.
        #expect(store.latestPath() == url)
        #expect(try FileManager.default.contentsOfDirectory(atPath: store.directory.path).sorted() == ["latest", "step-1.ckpt"])
    }

    static func metrics(step: Int) -> StepMetrics {
        StepMetrics(step: step, loss: 1 / Double(step), gradNorm: 0.5, learningRate: 0.01, examples: 64, workers: 2,
                    stepSeconds: 0.2, examplesPerSecond: 320, duplicateChunks: 0, staleChunks: 0, reassignedMicroBatches: 0,
                    sparsity: 0.5)
    }

    static func checkpoint(step: Int, values: Int) -> Checkpoint {
        Checkpoint(step: step, runID: "r", configYAML: "", mathsSettings: "seed = 1", records: [
            .init(name: "w", shape: [values], role: "param", values: (0 ..< values).map { Float($0) + 0.5 }),
        ])
    }
}
