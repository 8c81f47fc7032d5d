import Checkpoints
import Coordination
import FileIO
import Foundation
import Logging
import ParameterServer
import Pruning

/// The run folder's running records: metrics.jsonl, pruning.jsonl and the ledger files. The
/// shell hands it what the state machine and the parameter server decided; it only writes.
final class RunRecorder {
    let folder: RunFolder
    let logger: Logger
    let metrics: MetricsWriter
    let pruningLog: MetricsWriter
    let ledgerFiles: LedgerFiles
    let runStarted: Double

    /// A fresh run starts its files empty; a resumed one drops the lines of steps after `step`.
    init(folder: RunFolder, logger: Logger, resumeStep: Int?, ledger: RunLedger, now: Double) throws {
        self.folder = folder
        self.logger = logger
        ledgerFiles = LedgerFiles(folder: folder.ledgerFolder)
        for problem in try ledgerFiles.restore(ledger) { logger.warning("ledger: \(problem)") }
        if let resumeStep {
            try truncateJSONLines(folder.metricsFile, afterStep: resumeStep)
            try truncateJSONLines(folder.pruningFile, afterStep: resumeStep)
        } else {
            try? FileManager.default.removeItem(at: folder.pruningFile)
        }
        metrics = try MetricsWriter(file: folder.metricsFile, truncate: resumeStep == nil)
        pruningLog = try MetricsWriter(file: folder.pruningFile, truncate: false)
        runStarted = now
    }

    /// The ledger's lines for a step just applied; a completed epoch's file is synced first (the
    /// next checkpoint keeps only its summary).
    func recordLedger(_ entries: [RunLedger.Step], completed: [RunLedger.Epoch]) {
        do { try ledgerFiles.append(entries) } catch {
            logger.error("cannot append to the ledger in \(ledgerFiles.folder.path): \(error) (the checkpoints still hold it)")
        }
        for epoch in completed {
            do { try ledgerFiles.syncFile(epoch: epoch.epoch) } catch {
                logger.error("the ledger of epoch \(epoch.epoch) is not yet on disk: \(error)")
            }
            logger.info("epoch complete", metadata: ["epoch": "\(epoch.epoch)", "steps": "\(epoch.steps)", "examples": "\(epoch.examples)"])
        }
    }

    /// One metrics line: the machine's numbers of the step with the parameter server's.
    func recordStep(_ r: RunStateMachine.StepRecord, numbers: ParameterServer.StepNumbers?, now: Double) -> StepMetrics {
        let examples = numbers?.examples ?? 0
        var line = StepMetrics(step: r.step, loss: numbers?.loss ?? .nan, gradNorm: numbers?.gradNorm ?? .nan,
                               learningRate: numbers?.learningRate ?? .nan, examples: examples, workers: r.workers,
                               stepSeconds: r.stepSeconds, examplesPerSecond: r.stepSeconds > 0 ? Double(examples) / r.stepSeconds : 0,
                               duplicateChunks: r.duplicateChunks, staleChunks: r.staleChunks,
                               reassignedMicroBatches: r.reassignedMicroBatches, sparsity: numbers?.sparsity.prunable ?? 0,
                               projectionSeconds: numbers?.projectionSeconds ?? 0)
        if let v = r.validation {
            line.validWer = v["valid"]?.wordErrorRate
            line.validWerChannel = v["valid_channel"]?.wordErrorRate
            line.validCer = v["valid"]?.characterErrorRate
            line.validCerChannel = v["valid_channel"]?.characterErrorRate
            line.validWerSeen = v["valid_seen"]?.wordErrorRate
            line.validCerSeen = v["valid_seen"]?.characterErrorRate
        }
        line.wallSeconds = now - runStarted
        write(line, to: metrics, file: folder.metricsFile)
        return line
    }

    /// One line per support change and one per pruned layer: what was kept and how it was found.
    func recordSupportUpdate(_ stepUpdate: SupportUpdate, method: String, seconds: Double) {
        // Steps are counted from 1 in every file and log line.
        var update = stepUpdate
        update.step += 1
        logger.info("pruning: new support", metadata: [
            "step": "\(update.step)", "method": "\(method)",
            "target_sparsity": "\(String(format: "%.4f", update.sparsity))", "seconds": "\(String(format: "%.3f", seconds))",
        ])
        for layer in update.layers {
            var metadata: Logger.Metadata = ["layer": "\(layer.name)", "density": "\(String(format: "%.4f", layer.density))"]
            if let r = layer.measurementRatio { metadata["m_over_b"] = "\(String(format: "%.3f", r))" }
            if let e = layer.recoveryError { metadata["recovery_error"] = "\(String(format: "%.3f", e))" }
            if let o = layer.overlapWithTopK { metadata["overlap_with_top_k"] = "\(String(format: "%.3f", o))" }
            logger.debug("pruning: layer support", metadata: metadata)
        }
        write(update, to: pruningLog, file: folder.pruningFile)
    }

    /// A line the disk refuses is held (bounded) and written with a later one; say so once per
    /// failure, not silently.
    private func write(_ record: some Encodable, to writer: MetricsWriter, file: URL) {
        do { try writer.write(record) } catch {
            logger.error("cannot append to \(file.path): \(error)")
        }
    }

    /// At the end of a run: everything held is written now, or the reason it is not (the run
    /// then did not save all it did, and must not report success).
    func flushAll() -> String? {
        var problems: [String] = []
        for (name, flush) in [("metrics.jsonl", { try self.metrics.flushBacklog() }), ("pruning.jsonl", { try self.pruningLog.flushBacklog() }),
                              ("the ledger", { try self.ledgerFiles.flushBacklog() })] as [(String, () throws -> Void)] {
            do { try flush() } catch { problems.append("\(name): \(error)") }
        }
        for (name, backlog) in [("metrics.jsonl", metrics.backlog), ("pruning.jsonl", pruningLog.backlog), ("the ledger", ledgerFiles.backlog)]
        where backlog.droppedLines > 0 {
            problems.append("\(name): \(backlog.droppedLines) lines were dropped when the in-memory backlog was full")
        }
        return problems.isEmpty ? nil : "not every record reached the disk: " + problems.joined(separator: "; ")
    }

    func writeSummary(_ summary: RunSummary) -> Bool {
        do { try folder.write(summary.json() + "\n", to: folder.summaryFile) } catch {
            logger.error("cannot write \(folder.summaryFile.path): \(error)")
            return false
        }
        return true
    }
}
