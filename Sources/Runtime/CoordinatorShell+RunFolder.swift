import Checkpoints
import Foundation

/// The run folder at the start of a run: made to match where the state starts.
extension CoordinatorShell {
    /// Brings the run folder to where the state starts: checkpoints past a resume point set
    /// aside, metrics and pruning logs without the lines after it (a fresh run: empty), the
    /// ledger as the checkpoint has it, half-written checkpoint files removed, config.yaml.
    func openRunFolder() throws {
        let store = checkpoints
        if case let .resume(checkpoint, url, _) = runStart {
            // Checkpoints past the resume point belong to a history this run abandons.
            let abandoned = store.setAsideSteps(after: checkpoint.step)
            if url.standardizedFileURL == store.path(forStep: checkpoint.step).standardizedFileURL {
                try? store.pointLatest(toStep: checkpoint.step)
            }
            if !abandoned.isEmpty {
                logger.notice("moved checkpoints past step \(checkpoint.step) aside: this run continues from step \(checkpoint.step)",
                              metadata: ["files": "\(abandoned.joined(separator: ", "))", "to": "\(store.directory.path)/abandoned"])
            }
        }
        recorder = try RunRecorder(folder: folder, logger: logger, resumeStep: parts.resumedFrom == nil ? nil : machine.step,
                                   ledger: parts.ledger, now: Self.now())
        let leftovers = store.removeUnfinishedWrites()
        if !leftovers.isEmpty {
            logger.info("removed checkpoint files a crash left half-written", metadata: ["files": "\(leftovers.joined(separator: ", "))"])
        }
        try folder.write(configYAML, to: folder.configFile)
    }

    var runID: String { machine.runID }
    var everyoneToldFinished: Bool { machine.everyoneToldFinished }
}
