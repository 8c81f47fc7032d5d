import Foundation
import Tensors

/// Time, failures, applied steps, evaluations, checkpoints and the end of a run.
extension RunStateMachine {
    // MARK: Time and failures

    mutating func tick(now: Double) -> [Directive] {
        switch phase {
        case .finishing, .finished:
            // Nobody is late for anything any more; held requests learn the outcome.
            return serveHeld(now: now)
        default:
            break
        }
        var out: [Directive] = []
        // Members that hold no work and have not asked for any for much longer than a held
        // request lasts are gone without a goodbye (a proof answered on a closed connection).
        let silence = settings.pollHoldSeconds * 2 + 10
        for member in membership.members.values.sorted(by: { $0.id < $1.id }) where now - member.lastSeen > silence {
            if !holdsWork(member.session) {
                out += drop(member.session, reason: .silent, detail: "no request for \(Int(now - member.lastSeen)) s", now: now)
            }
        }
        if !applying {
            for (session, _) in evaluation?.expire(now: now) ?? [] {
                out += drop(session, reason: .missedDeadline, detail: "an evaluation batch was not scored within \(settings.stepDeadlineSeconds) s", now: now)
            }
            // Expiry already put the late micro-batches back in the pool: name them among the
            // member's reassigned ones (release at the drop finds only those not yet late).
            let late = round.expire(now: now)
            var seen = Set<SessionID>()
            for session in late.map(\.session) where seen.insert(session).inserted {
                let mbs = late.filter { $0.session == session }.map(\.microBatch)
                out += drop(session, reason: .missedDeadline,
                            detail: "micro-batch \(mbs.map(String.init).joined(separator: ", ")) of step \(step + 1) was not in within \(settings.stepDeadlineSeconds) s",
                            expired: mbs, now: now)
            }
        }
        if membership.count == 0 {
            let since = emptySince ?? now
            emptySince = since
            if let limit = settings.waitForWorkersSeconds, now - since >= limit {
                return out + beginFinishing(.failed, message: "no worker for \(Int(now - since)) s (coordinator.wait_for_workers_seconds = \(limit)): are the workers running, and can they reach this coordinator?", now: now)
            }
        }
        return out + serveHeld(now: now)
    }

    /// True when `session` holds a micro-batch or an evaluation batch.
    func holdsWork(_ session: SessionID) -> Bool {
        let holdsEval = evaluation?.batches.contains { if case .assigned(to: session, _) = $0.status { true } else { false } } ?? false
        return holdsEval || round.microBatches.indices.contains { round.assignee(of: $0) == session }
    }

    mutating func pipeClosed(_ pipe: UInt32, now: Double) -> [Directive] {
        var out: [Directive] = []
        for member in membership.members.values.sorted(by: { $0.id < $1.id }) where member.pipe == pipe {
            out += drop(member.session, reason: .disconnected, detail: "its connection closed", now: now)
        }
        return out + serveHeld(now: now)
    }

    /// Removes a member; its work goes back to the pool.
    /// `expired`: its micro-batches a deadline has already taken back.
    mutating func drop(_ session: SessionID, reason: Membership.Reason, detail: String, expired: [Int] = [], now: Double) -> [Directive] {
        guard let member = membership.remove(session, reason: reason) else { return [] }
        evaluation?.release(session)
        let released = (expired + round.release(session)).sorted()
        inFlight[session] = nil
        unsentTask[session] = nil
        lastTask[session] = nil
        newestWorkRequest[session] = nil
        delivered[session] = nil
        welcomes = welcomes.filter { $0.value.session != session }
        if membership.count == 0 { emptySince = now }
        return [.memberRemoved(member, reason: reason, detail: detail, reassigned: released)]
    }

    // MARK: Steps

    mutating func stepApplied(_ applied: AppliedStep, now: Double) -> [Directive] {
        guard applying, applied.step == step else {
            return [.warn("internal: step \(applied.step + 1) reported applied while the coordinator is at step \(step + 1)", peer: nil)]
        }
        applying = false
        if let failure = applied.failure {
            return beginFinishing(.failed, message: failure, now: now)
        }
        // Nobody could be heard while the step was applied (a CSP support update takes seconds).
        membership.pardon(seconds: applied.busySeconds, before: now - applied.busySeconds)
        reassignedMicroBatches += round.reassignments
        let record = StepRecord(step: step + 1, workers: membership.count, stepSeconds: now - stepStarted,
                                duplicateChunks: duplicateChunks, staleChunks: staleChunks,
                                reassignedMicroBatches: reassignedMicroBatches, validation: nil)
        step += 1
        stepStarted = now
        nonFiniteBy = [:]
        // Re-sends of the step just applied are still answered as the first time; older ones are stale.
        let oldest = weightsVersion - 1
        delivered = delivered.mapValues { $0.filter { $0.weightsVersion >= oldest } }
        deltaBase = UInt64(step)
        var out: [Directive] = []
        let evalDue = settings.evalEverySteps > 0 && settings.evalSets.values.contains { $0 > 0 }
            && (step % settings.evalEverySteps == 0 || step >= settings.totalSteps)
        let periodic = settings.checkpointEverySteps > 0 && step % settings.checkpointEverySteps == 0
        if periodic || settings.snapshotSteps.contains(step), step < settings.totalSteps {
            // After a validation, the checkpoint waits for it (nothing changes meanwhile): a kill
            // during the validation resumes before the step and scores it again, so metrics.jsonl
            // never lacks the step's line.
            if evalDue { checkpointAfterEvaluation = true } else { out += requestCheckpoint(final: false) }
        }
        if step >= settings.totalSteps, !evalDue {
            out.append(.recordStep(record))
            return out + beginFinishing(.completed, message: nil, now: now)
        }
        if step < settings.totalSteps {
            round = StepRound(step: step, weightsVersion: weightsVersion, microBatches: order.microBatches(forStep: step), grid: grid)
        }
        if evalDue {
            let sets = settings.evalSets.filter { $0.value > 0 }.map { (name: $0.key, examples: $0.value) }
            evaluation = EvalRound(step: step, weightsVersion: weightsVersion, sets: sets, batchSize: settings.evalBatch)
            evalCounts = [:]
            pendingRecord = record
            finishAfterEvaluation = step >= settings.totalSteps
            phase = .evaluating(step: step)
            if evaluation!.isComplete { return out + completeEvaluation(now: now) }
        } else {
            out.append(.recordStep(record))
            phase = .training(step: step)
        }
        return out + serveHeld(now: now)
    }

    mutating func completeEvaluation(now: Double) -> [Directive] {
        var out: [Directive] = []
        lastValidation = evalCounts
        if var record = pendingRecord {
            record.validation = evalCounts
            out.append(.recordStep(record))
        }
        pendingRecord = nil
        evaluation = nil
        if checkpointAfterEvaluation {
            checkpointAfterEvaluation = false
            out += requestCheckpoint(final: false)
        }
        // The time spent scoring is not the next step's.
        stepStarted = now
        if finishAfterEvaluation { return out + beginFinishing(.completed, message: nil, now: now) }
        phase = .training(step: step)
        return out + serveHeld(now: now)
    }

    // MARK: Checkpoints

    mutating func requestCheckpoint(final: Bool) -> [Directive] {
        lastCheckpointRequested = step
        awaitingCheckpoint = step
        return [.writeCheckpoint(step: step, final: final)]
    }

    mutating func checkpointWritten(_ written: Int, now: Double) -> [Directive] {
        lastCheckpointWritten = max(lastCheckpointWritten ?? written, written)
        checkpointFailuresInRow = 0
        if awaitingCheckpoint == written { awaitingCheckpoint = nil }
        if case .finishing = phase, written == step, let ending { return conclude(ending.status, message: ending.message, now: now) }
        return []
    }

    mutating func checkpointFailed(_ failed: Int, message: String, now: Double) -> [Directive] {
        checkpointFailuresInRow += 1
        if awaitingCheckpoint == failed { awaitingCheckpoint = nil }
        var out: [Directive] = [.warn("checkpoint of step \(failed) not written: \(message)", peer: nil)]
        if case .finishing = phase {
            guard failed == step, let ending else { return out }
            // A run whose final checkpoint is not on disk has not saved its work: never "completed".
            let newest = lastCheckpointWritten.map { "the newest checkpoint is step \($0)" } ?? "there is no checkpoint"
            let note = "the final checkpoint (step \(step)) could not be written: \(message); \(newest)"
            return out + conclude(.failed, message: ending.message.map { $0 + "; " + note } ?? note, now: now)
        }
        if let limit = settings.checkpointFailuresToStop, checkpointFailuresInRow >= limit {
            let newest = lastCheckpointWritten.map { "the newest checkpoint on disk is step \($0)" } ?? "no checkpoint of this run is on disk"
            out += beginFinishing(.failed, message: "stopping: \(checkpointFailuresInRow) checkpoint writes in a row failed (checkpoint.on_write_failure: stop); the last: \(message). \(newest); free space or fix the cause and continue with --resume (or set checkpoint.on_write_failure: continue to train on without checkpoints)", now: now)
        }
        return out
    }

    // MARK: The end

    /// Ends the run: the step line an evaluation held back goes out, the final checkpoint is
    /// asked for (unless the last step's is already on disk or on its way), and the run finishes
    /// when it is reported. From here on no chunk is accepted and no task handed out.
    mutating func beginFinishing(_ status: Status, message: String?, now: Double) -> [Directive] {
        switch phase {
        case .finishing, .finished: return []
        default: break
        }
        ending = (status, message)
        phase = .finishing(status)
        var out: [Directive] = []
        if let record = pendingRecord {
            out.append(.recordStep(record))
            pendingRecord = nil
        }
        evaluation = nil
        // (The shell applies a step within the event that completed it, so a run never starts
        // finishing between `.applyStep` and `.stepApplied`.)
        // Nothing applied since the start (a run that fails before its first step), or the last
        // step's checkpoint is on disk: nothing to write.
        if step == startStep && step == 0 || lastCheckpointWritten == step {
            return out + conclude(status, message: message, now: now)
        }
        if awaitingCheckpoint == step { return out }
        return out + requestCheckpoint(final: true)
    }

    mutating func conclude(_ status: Status, message: String?, now: Double) -> [Directive] {
        phase = .finished(status)
        return [.finish(status, message: message)] + serveHeld(now: now)
    }
}
