import Foundation
import Tensors

/// Requests: the join handshake, work, gradient chunks, evaluation results, leaving.
extension RunStateMachine {
    mutating func request(_ id: RequestID, _ inbound: Inbound, _ origin: Origin, entropy: Data, now: Double) -> [Directive] {
        guard origin.protocolVersion == settings.protocolVersion else {
            return [.warn("refused a request: protocol version \(origin.protocolVersion), this coordinator speaks \(settings.protocolVersion)", peer: origin.peer),
                    .reply(id, .refusal(.versionMismatch, "this coordinator speaks protocol version \(settings.protocolVersion); the request has version \(origin.protocolVersion)"))]
        }
        switch inbound {
        case let .hello(name, clientNonce):
            return hello(id, origin, name: name, clientNonce: clientNonce, entropy: entropy, now: now)
        case let .proof(name, clientNonce, serverNonce, mac, signature) where origin.runID == runID:
            return join(id, origin, name: name, clientNonce: clientNonce, serverNonce: serverNonce, mac: mac,
                        signature: signature, entropy: entropy, now: now)
        default:
            break
        }
        guard origin.runID == runID else {
            return [.warn("refused a request for another run ('\(origin.runID)')", peer: origin.peer),
                    .reply(id, .refusal(.wrongRun, "this coordinator runs '\(runID)', the request is for run '\(origin.runID)'"))]
        }
        let session = origin.session
        switch membership.touch(session, pipe: origin.pipe, now: now) {
        case .member:
            break
        case let .otherPipe(member):
            // Someone who learnt the session (a log, a capture) cannot use it, nor make the
            // member's connection look closed: the member keeps its session and its work.
            borrowedSessionRefusals += 1
            return [.warn("refused a request with worker '\(member.name)''s session \(session) from another connection (a session is valid only on the connection that joined it; the worker keeps it)", peer: origin.peer),
                    .reply(id, .refusal(.unknownSession, "session \(session) belongs to another connection: a session is valid only on the connection that joined it; join again from this one"))]
        case .unknown:
            // Once the run is over, a worker dropped near its end learns it at once, rather than
            // joining again only to be told.
            if case let .finished(status) = phase, case .work = inbound {
                return [.reply(id, .finished(reason: "the run is over (\(status.rawValue))"))]
            }
            // A Leave re-sent after its goodbye: the same goodbye.
            if case .leave = inbound, departed[session] == origin.pipe {
                resentRequests += 1
                return [.reply(id, .finished(reason: "goodbye"))]
            }
            return [.reply(id, .refusal(.unknownSession, "session \(session) is not a member (the coordinator restarted or dropped it): join again"))]
        }
        // Once the run is over, asking for work is answered so at once, whatever is in flight.
        if case let .finished(status) = phase, case .work = inbound {
            toldFinished.insert(session)
            return [.reply(id, .finished(reason: "the run is over (\(status.rawValue))"))]
        }
        let count = inFlight[session, default: 0]
        guard count < settings.maxRequestsInFlight else {
            return [.warn("refused a request: worker \(membership.members[session]!.name) has \(count) requests in flight (coordinator.max_requests_in_flight = \(settings.maxRequestsInFlight))", peer: origin.peer),
                    .reply(id, .refusal(.overloaded, "\(count) requests of this session are in flight, the limit (coordinator.max_requests_in_flight) is \(settings.maxRequestsInFlight): wait for answers before sending more"))]
        }
        inFlight[session] = count + 1
        pending[id] = session
        switch inbound {
        case let .work(have):
            return work(id, session: session, haveVersion: have, sequence: origin.sequence, now: now)
        case let .chunk(header):
            return chunk(id, header, origin: origin, now: now)
        case let .evalResult(batch, set, version, counts):
            return evalResult(id, batch: batch, set: set, weightsVersion: version, counts: counts, origin: origin, now: now)
        case let .leave(reason):
            rememberDeparted(session, pipe: origin.pipe)
            var out = drop(session, reason: .left, detail: reason, now: now)
            out.append(.reply(id, .finished(reason: "goodbye")))
            return out + serveHeld(now: now)
        case .receipt:
            // Only the shell's copy count cares (it counts by connection): nothing changes here.
            return [.reply(id, .ack(.accepted))]
        case .hello, .proof:
            preconditionFailure("handled above")
        }
    }

    // MARK: Work

    private mutating func work(_ id: RequestID, session: SessionID, haveVersion: UInt64, sequence: UInt64, now: Double) -> [Directive] {
        // A re-send of a request older than the member's newest: its worker has moved on (REQ
        // drops the answer). Told to wait, with no effect: taken for a new request, it would hand
        // back the task the newer one got. Held like any request while a task waits to leave.
        if sequence != 0, let newest = newestWorkRequest[session], sequence < newest {
            resentRequests += 1
            if unsentTask[session] != nil {
                held.append(Held(request: id, session: session, haveVersion: haveVersion, sequence: sequence,
                                 until: now + settings.pollHoldSeconds, resend: true))
                return []
            }
            return [.reply(id, .wait)]
        }
        if sequence != 0 { newestWorkRequest[session] = sequence }
        // Counted once, as it arrives (a held request is answered on a later pass).
        if !isResend(session, haveVersion, sequence), case .training = phase, !applying, round.microBatches.contains(where: {
            if case .assigned(to: session, _) = $0.status { return $0.receivedCount > 0 }
            return false
        }) {
            overlappedWorkRequests += 1
        }
        // Asked again while the member's last task is still waiting for its connection: not a
        // lost reply (that one would have left). Held until it has left, so that one member never
        // has more than one task (and copy of the weights) waiting to be sent.
        if unsentTask[session] != nil {
            held.append(Held(request: id, session: session, haveVersion: haveVersion, sequence: sequence,
                             until: now + settings.pollHoldSeconds, resend: isResend(session, haveVersion, sequence)))
            return []
        }
        if let response = answerWork(id, session: session, haveVersion: haveVersion, sequence: sequence, now: now) {
            return [.reply(id, response)]
        }
        held.append(Held(request: id, session: session, haveVersion: haveVersion, sequence: sequence,
                         until: now + settings.pollHoldSeconds))
        return []
    }

    /// True when a work request repeats the one that got the member's last task: the same
    /// request number (a worker numbers its requests; nng's REQ re-sends the same bytes), or,
    /// from a worker that does not number them, the same weights version.
    func isResend(_ session: SessionID, _ haveVersion: UInt64, _ sequence: UInt64) -> Bool {
        guard let last = lastTask[session] else { return false }
        return sequence != 0 ? last.sequence == sequence : last.have == haveVersion
    }

    /// A task, Finished, Wait, or nil (nothing to hand out now) for work request `id`.
    ///
    /// A numbered re-send of the request that got the member's last task (nng's REQ sends a
    /// request again when its reply is late) comes here only once that task's reply has left (see
    /// `work`): it went first on the same connection, so REQ has taken it and drops whatever
    /// answers this one. It is told to wait, with no second assignment and no second copy of the
    /// model: after a projection step longer than REQ's re-send time, every worker's re-sends
    /// drew a model-sized reply each (64 waited for their turn at once). Should the original's
    /// reply have been lost after all, the worker's next request (a new number) gets the task
    /// back, since nothing of it has arrived. An unnumbered re-send gets its original's task
    /// again while nothing of it has arrived. Otherwise a task that received no chunk goes back
    /// to the pool (possibly to the same member at once); micro-batches whose chunks have arrived
    /// stay with the member.
    ///
    /// Requests that are not numbered (sequence 0) are told apart by the weights version alone:
    /// the same version while nothing of the last task has arrived counts as a re-send, which a
    /// worker asking for its next task with that task's chunks still in flight cannot be told from.
    private mutating func answerWork(_ id: RequestID, session: SessionID, haveVersion: UInt64, sequence: UInt64, now: Double) -> Response? {
        if let last = lastTask[session], isResend(session, haveVersion, sequence) {
            if sequence != 0 {
                resentRequests += 1
                return .wait
            }
            if holds(last.task, session, unstartedOnly: true) {
                resentRequests += 1
                unsentTask[session] = id
                return .task(last.task)
            }
        }
        round.releaseUnstarted(session)
        evaluation?.release(session)
        let response = assignment(for: session, haveVersion: haveVersion, now: now)
        if case let .task(task)? = response {
            unsentTask[session] = id
            lastTask[session] = (haveVersion, sequence, task)
        }
        return response
    }

    /// True while `task` is assigned to `session` in the open round (and, with `unstartedOnly`,
    /// none of its results has arrived).
    private func holds(_ task: TaskAssignment, _ session: SessionID, unstartedOnly: Bool) -> Bool {
        guard !applying else { return false }
        switch (task.kind, phase) {
        case (.train, .training):
            guard task.weightsVersion == round.weightsVersion, round.microBatches.indices.contains(task.index) else { return false }
            let mb = round.microBatches[task.index]
            if case .assigned(to: session, _) = mb.status { return !unstartedOnly || mb.receivedCount == 0 }
            return false
        case (.eval, .evaluating):
            guard let evaluation, task.weightsVersion == evaluation.weightsVersion, evaluation.batches.indices.contains(task.index) else { return false }
            if case .assigned(to: session, _) = evaluation.batches[task.index].status { return true }
            return false
        default:
            return false
        }
    }

    /// A member that said goodbye on `pipe` (bounded: the last 256).
    private mutating func rememberDeparted(_ session: SessionID, pipe: UInt32) {
        departed[session] = pipe
        departedOrder.append(session)
        if departedOrder.count > 256 { departed.removeValue(forKey: departedOrder.removeFirst()) }
    }

    /// The reply to `id` has left (or could not be sent): the request is no longer in flight.
    mutating func replySent(_ id: RequestID, now: Double) -> [Directive] {
        guard let session = pending.removeValue(forKey: id) else { return [] }
        inFlight[session, default: 1] -= 1
        if inFlight[session]! <= 0 { inFlight[session] = nil }
        guard unsentTask[session] == id else { return [] }
        unsentTask[session] = nil
        return serveHeld(now: now)
    }

    /// A task, Finished, or nil when there is nothing to hand out now.
    mutating func assignment(for session: SessionID, haveVersion: UInt64, now: Double) -> Response? {
        switch phase {
        case .waitingForWorkers, .finishing:
            return nil
        case let .finished(status):
            toldFinished.insert(session)
            return .finished(reason: "the run is over (\(status.rawValue))")
        case .evaluating:
            guard !applying, let batch = evaluation?.assign(to: session, deadline: now + settings.stepDeadlineSeconds) else { return nil }
            let b = evaluation!.batches[batch]
            return .task(TaskAssignment(kind: .eval(set: b.set), index: batch, examples: b.examples,
                                        weightsVersion: evaluation!.weightsVersion,
                                        weights: attachment(have: haveVersion, current: evaluation!.weightsVersion),
                                        deadlineSeconds: settings.stepDeadlineSeconds))
        case .training:
            guard !applying, let mb = round.assign(to: session, deadline: now + settings.stepDeadlineSeconds) else { return nil }
            return .task(TaskAssignment(kind: .train(epoch: order.epoch(ofStep: step)), index: mb,
                                        examples: round.microBatches[mb].examples, weightsVersion: round.weightsVersion,
                                        weights: attachment(have: haveVersion, current: round.weightsVersion),
                                        deadlineSeconds: settings.stepDeadlineSeconds))
        }
    }

    /// Values only for a worker one version behind (when the step produced a delta), nothing for
    /// one that has the weights, the whole model otherwise.
    func attachment(have: UInt64, current: UInt64) -> WeightsAttachment {
        if have == current { return .none }
        if let base = deltaBase, have == base, base &+ 1 == current { return .delta(version: current) }
        return .full(version: current)
    }

    /// Answers held work requests that can be answered now.
    mutating func serveHeld(now: Double) -> [Directive] {
        guard !held.isEmpty else { return [] }
        var out: [Directive] = []
        var still: [Held] = []
        for h in held {
            if !isFinished, membership.members[h.session] == nil {
                out.append(.reply(h.request, .refusal(.unknownSession, "session \(h.session) was dropped: join again")))
            } else if !isFinished, unsentTask[h.session] == nil, h.sequence != 0, let newest = newestWorkRequest[h.session], h.sequence < newest {
                // Its worker has sent a newer request since (see `work`): no effect.
                out.append(.reply(h.request, .wait))
            } else if !isFinished, unsentTask[h.session] != nil {
                // The member's last task has not left yet (see `work`). A numbered re-send of the
                // request it answers waits for it however long: answered Wait, it would take
                // REQ's place of the task (one reply per request), and the task and the copy of
                // the model it carries would go to waste (a reply can wait seconds for its turn to
                // copy the weights, past REQ's re-send time). Unnumbered requests cannot be told
                // from a new request by the same worker: they are told to wait as before. Decided
                // now, not when it was held: the task it would overtake may have been handed out
                // since (to its original, held beside it).
                let reSent = h.sequence != 0 && lastTask[h.session]?.sequence == h.sequence
                if now >= h.until && !reSent { out.append(.reply(h.request, .wait)) } else { still.append(h) }
            } else {
                if h.resend, h.sequence == 0, let last = lastTask[h.session], holds(last.task, h.session, unstartedOnly: false) {
                    // Its original's task has left: the same task again (REQ keeps whichever reply comes first).
                    resentRequests += 1
                    unsentTask[h.session] = h.request
                    out.append(.reply(h.request, .task(last.task)))
                } else if let response = answerWork(h.request, session: h.session, haveVersion: h.haveVersion, sequence: h.sequence, now: now) {
                    out.append(.reply(h.request, response))
                } else if now >= h.until {
                    out.append(.reply(h.request, .wait))
                } else {
                    still.append(h)
                }
            }
        }
        held = still
        return out
    }

    // MARK: Gradients and scores

    private mutating func chunk(_ id: RequestID, _ c: ChunkHeader, origin: Origin, now: Double) -> [Directive] {
        let delivery = Delivery(weightsVersion: c.weightsVersion, microBatch: c.microBatch, tensor: c.tensor, chunk: c.chunkIndex, set: "")
        if delivered[origin.session]?.contains(delivery) == true {
            // This member's own chunk again (a REQ re-send): accepted, as the first time, and not folded again.
            resentRequests += 1
            return [.reply(id, .ack(.accepted))]
        }
        guard case .training = phase, !applying else {
            // Evaluating, finishing, or applying: the step this chunk belongs to is not open.
            staleChunks += 1
            return [.reply(id, .ack(.stale))]
        }
        let name = membership.members[origin.session]?.name ?? "?"
        guard let chunkStep = Int(exactly: origin.step) else {
            return [.reply(id, .refusal(.malformed, "step \(origin.step) is out of range"))]
        }
        guard c.lossSum.isFinite, c.sumOfSquares.isFinite else {
            var out: [Directive] = [
                .warn("refused a gradient chunk from worker \(name) with non-finite values (micro-batch \(c.microBatch), tensor \(c.tensor)): is its model diverging?", peer: origin.peer),
                .reply(id, .refusal(.malformed, "the chunk's loss_sum or values are not finite")),
            ]
            // The same micro-batch diverging on two workers is the model, not a worker: every
            // other worker would fail on it too, so the run ends (its last checkpoint is intact).
            nonFiniteBy[c.microBatch, default: []].insert(origin.session)
            if nonFiniteBy[c.microBatch]!.count >= 2 {
                out += beginFinishing(.failed, message: "step \(step + 1) not applied: the gradient of micro-batch \(c.microBatch) is not finite on \(nonFiniteBy[c.microBatch]!.count) workers: the model is diverging. The run folder's last checkpoint is intact: resume from it with a lower optimizer.learning_rate or a smaller optimizer.clip_norm, with --allow-changed-settings (both change the maths)", now: now)
            }
            return out
        }
        // Folded with weight `exampleCount`, a norm this large would leave float32's range.
        let weightedNorm = c.sumOfSquares.squareRoot() * Double(max(1, c.exampleCount))
        guard weightedNorm < Double(Float.greatestFiniteMagnitude) / 16 else {
            return [.warn("refused a gradient chunk from worker \(name): its norm times its examples (\(weightedNorm)) overflows float32 (micro-batch \(c.microBatch), tensor \(c.tensor))", peer: origin.peer),
                    .reply(id, .refusal(.malformed, "the chunk's gradient norm × examples is \(weightedNorm), past float32's range: the model on this worker is diverging"))]
        }
        let verdict = round.receive(step: chunkStep, weightsVersion: c.weightsVersion, microBatch: c.microBatch, tensor: c.tensor,
                                    chunkIndex: c.chunkIndex, chunkCount: c.chunkCount, exampleCount: c.exampleCount,
                                    valueCount: c.valueCount, from: origin.session)
        switch verdict {
        case let .accept(offset, examples, first, _):
            delivered[origin.session, default: []].insert(delivery)
            var out: [Directive] = [.fold(id, offset: offset, examples: examples, microBatch: c.microBatch, lossSum: first ? c.lossSum : nil),
                                    .reply(id, .ack(.accepted))]
            if round.isComplete {
                applying = true
                out.append(.applyStep(step: step))
            }
            return out
        case .duplicate:
            duplicateChunks += 1
            return [.reply(id, .ack(.duplicate))]
        case .stale:
            staleChunks += 1
            return [.reply(id, .ack(.stale))]
        case let .notAssigned(holder):
            return [.warn("refused a chunk from worker \(name) for micro-batch \(c.microBatch), which is \(holder)", peer: origin.peer),
                    .reply(id, .refusal(.notAssigned, "micro-batch \(c.microBatch) of step \(chunkStep + 1) is \(holder): drop it and ask for work"))]
        case let .invalid(reason):
            return [.warn("refused a gradient chunk from worker \(name): \(reason)", peer: origin.peer),
                    .reply(id, .refusal(.malformed, reason))]
        }
    }

    private mutating func evalResult(_ id: RequestID, batch: Int, set: String, weightsVersion: UInt64, counts: EvaluationCounts,
                                     origin: Origin, now: Double) -> [Directive] {
        let delivery = Delivery(weightsVersion: weightsVersion, microBatch: batch, tensor: -1, chunk: -1, set: set)
        if delivered[origin.session]?.contains(delivery) == true {
            resentRequests += 1
            return [.reply(id, .ack(.accepted))]
        }
        guard case .evaluating = phase, evaluation != nil else { return [.reply(id, .ack(.stale))] }
        // Counts a batch cannot have (a buggy or hostile worker) would corrupt the scores, or
        // overflow their sums: refused.
        let limit = 1 << 40
        let examples = evaluation!.batches.indices.contains(batch) ? evaluation!.batches[batch].examples.count : 0
        guard counts.utterances <= examples, [counts.words, counts.wordEdits, counts.characters, counts.characterEdits].allSatisfy({ $0 >= 0 && $0 < limit }) else {
            return [.warn("refused an evaluation result of batch \(batch) with impossible counts (\(counts.utterances) utterances of \(examples), \(counts.words) words)", peer: origin.peer),
                    .reply(id, .refusal(.malformed, "evaluation batch \(batch) has \(examples) utterances; the result's counts are impossible for it"))]
        }
        switch evaluation!.receive(batch: batch, set: set, weightsVersion: weightsVersion) {
        case .accept:
            delivered[origin.session, default: []].insert(delivery)
            evalCounts[set, default: EvaluationCounts()].add(counts)
            var out: [Directive] = [.reply(id, .ack(.accepted))]
            if evaluation!.isComplete { out += completeEvaluation(now: now) }
            return out
        case .duplicate:
            return [.reply(id, .ack(.duplicate))]
        case .stale:
            return [.reply(id, .ack(.stale))]
        case let .invalid(reason):
            return [.warn("refused an evaluation result: \(reason)", peer: origin.peer), .reply(id, .refusal(.malformed, reason))]
        }
    }
}
