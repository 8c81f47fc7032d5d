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
        case let .hello(_, clientNonce):
            guard clientNonce.count >= JoinHandshake.minimumNonceBytes else {
                return [.reply(id, .refusal(.malformed, "the client nonce has \(clientNonce.count) bytes; at least \(JoinHandshake.minimumNonceBytes) fresh random bytes are required"))]
            }
            let nonce = entropy.prefix(JoinHandshake.nonceBytes)
            handshake.issue(serverNonce: nonce, now: now)
            return [.reply(id, .challenge(serverNonce: nonce))]
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
        guard membership.touch(session, pipe: origin.pipe, now: now) != nil else {
            // Once the run is over, a worker dropped near its end learns it at once, rather than
            // joining again only to be told.
            if case let .finished(status) = phase, case .work = inbound {
                return [.reply(id, .finished(reason: "the run is over (\(status.rawValue))"))]
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
            return work(id, session: session, haveVersion: have, now: now)
        case let .chunk(header):
            return chunk(id, header, origin: origin, now: now)
        case let .evalResult(batch, set, version, counts):
            return evalResult(id, batch: batch, set: set, weightsVersion: version, counts: counts, origin: origin, now: now)
        case let .leave(reason):
            var out = drop(session, reason: .left, detail: reason, now: now)
            out.append(.reply(id, .finished(reason: "goodbye")))
            return out + serveHeld(now: now)
        case .hello, .proof:
            preconditionFailure("handled above")
        }
    }

    // MARK: Joining

    private mutating func join(_ id: RequestID, _ origin: Origin, name: String, clientNonce: Data, serverNonce: Data, mac: Data,
                               signature: String, entropy: Data, now: Double) -> [Directive] {
        guard clientNonce.count >= JoinHandshake.minimumNonceBytes else {
            return [.reply(id, .refusal(.malformed, "the client nonce has \(clientNonce.count) bytes; at least \(JoinHandshake.minimumNonceBytes) are required"))]
        }
        switch handshake.verify(workerName: name, clientNonce: clientNonce, serverNonce: serverNonce, mac: mac, now: now) {
        case .unknownChallenge:
            return [.warn("refused a join from '\(name)': unknown or expired challenge", peer: origin.peer),
                    .reply(id, .refusal(.challengeExpired, "the challenge is unknown, expired or already used: start again with Hello"))]
        case .badProof:
            return [.warn("refused a join from '\(name)': the proof does not verify (wrong run token)", peer: origin.peer),
                    .reply(id, .refusal(.badProof, "the proof does not verify: this worker's token is not the run's token"))]
        case .accepted:
            break
        }
        // A deterministic run needs the same bits from every worker for the same micro-batch.
        if settings.requireComputeSignature {
            let theirs = signature.isEmpty ? "(not reported)" : signature
            if let required = computeSignature, required != signature {
                return [.warn("refused worker '\(name)': it computes with \(theirs), the run's workers with \(required) (deterministic: true)", peer: origin.peer),
                        .reply(id, .refusal(.incompatible, "deterministic: true needs every worker to compute the same bits: this worker has \(theirs), the run's workers \(required). Run it on a machine of the same CPU type, or set OPENBLAS_CORETYPE on every machine to one kernel they all support"))]
            }
        }
        var out: [Directive] = []
        if settings.requireComputeSignature, computeSignature == nil {
            computeSignature = signature
            out.append(.note("deterministic run: every worker must compute with \(signature.isEmpty ? "(not reported)" : signature)"))
        }
        let session = SessionID(entropy.suffix(JoinHandshake.sessionBytes))
        let member = membership.join(name: name, session: session, pipe: origin.pipe, now: now)
        workerNames.insert(name)
        emptySince = nil
        out += [
            .memberJoined(member, peer: origin.peer),
            .reply(id, .welcome(workerID: member.id, session: session,
                                serverMAC: handshake.serverMAC(clientNonce: clientNonce, serverNonce: serverNonce, session: session.bytes))),
        ]
        if phase == .waitingForWorkers, membership.count >= settings.minWorkers {
            phase = .training(step: step)
            stepStarted = now
            out.append(.startedTraining(step: step, workers: membership.count))
        }
        return out + serveHeld(now: now)
    }

    // MARK: Work

    private mutating func work(_ id: RequestID, session: SessionID, haveVersion: UInt64, now: Double) -> [Directive] {
        // Asked again while the member's last task is still waiting for its connection: not a
        // lost reply (that one would have left). Held until it has left, so that one member never
        // has more than one task (and copy of the weights) waiting to be sent.
        if unsentTask[session] != nil {
            held.append(Held(request: id, session: session, haveVersion: haveVersion, until: now + settings.pollHoldSeconds,
                             asksAgain: true))
            return []
        }
        // A task whose reply was lost and asked for again has received no chunk: it goes back to
        // the pool (possibly to the same member at once). Micro-batches whose chunks are on
        // their way stay with the member: it asks for its next task while they are in flight.
        round.releaseUnstarted(session)
        evaluation?.release(session)
        if let response = assignment(for: session, haveVersion: haveVersion, now: now) {
            if case .task = response { unsentTask[session] = id }
            return [.reply(id, response)]
        }
        held.append(Held(request: id, session: session, haveVersion: haveVersion, until: now + settings.pollHoldSeconds))
        return []
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
            } else if !isFinished, unsentTask[h.session] != nil {
                // The member's last task has not left yet (see `work`).
                if now >= h.until { out.append(.reply(h.request, .wait)) } else { still.append(h) }
            } else {
                if h.asksAgain {
                    // As `work` does for a request that asks again.
                    round.releaseUnstarted(h.session)
                    evaluation?.release(h.session)
                }
                if let response = assignment(for: h.session, haveVersion: h.haveVersion, now: now) {
                    if case .task = response { unsentTask[h.session] = h.request }
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
