import Coordination
import Foundation

/// The run summary (summary.json, `--json`): what the run did, from the machine's counts and the
/// parameter server's numbers.
extension CoordinatorShell {
    func makeSummary(status: RunSummary.Status, message: String?) -> RunSummary {
        let latest = checkpoints.latestPath()
        let sparsity = server.projection.sparsityReport(server.broadcast, layout: server.layout)
        let wall = Self.now() - recorder.runStarted
        let m = machine
        var summary = RunSummary(status: status, runId: m.runID, steps: m.step, startStep: m.startStep, workersSeen: m.workerNames.count,
                                 workersFailed: m.membership.failedTotal, firstLoss: firstLoss, finalLoss: parts.lastLoss,
                                 sparsity: sparsity.prunable, sparsityOverall: sparsity.overall, checkpoint: latest?.path,
                                 wallSeconds: wall, examplesPerSecond: wall > 0 ? Double(examplesProcessed) / wall : 0,
                                 duplicateChunks: m.duplicateChunks, staleChunks: m.staleChunks,
                                 reassignedMicroBatches: m.reassignedMicroBatches,
                                 validWer: m.lastValidation["valid"]?.wordErrorRate,
                                 validWerChannel: m.lastValidation["valid_channel"]?.wordErrorRate, message: message)
        summary.validWerSeen = m.lastValidation["valid_seen"]?.wordErrorRate
        summary.resentRequests = m.resentRequests
        summary.overlappedWorkRequests = m.overlappedWorkRequests
        summary.streamChunks = streamChunks
        summary.streamWeights = streamWeights
        summary.pruningMethod = server.projection.name
        summary.projectionSeconds = projectionSecondsTotal
        summary.deterministic = config.deterministic
        summary.resumedFrom = parts.resumedFrom
        return summary
    }
}
