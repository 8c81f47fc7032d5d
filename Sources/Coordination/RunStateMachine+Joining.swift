import Foundation

/// Joining: Hello and its challenge, the Proof and its Welcome, and the limits a join meets
/// (join attempts per host, workers at most, the run's compute signature).
extension RunStateMachine {
    mutating func hello(_ id: RequestID, _ origin: Origin, name: String, clientNonce: Data, entropy: Data, now: Double) -> [Directive] {
        guard clientNonce.count >= JoinHandshake.minimumNonceBytes else {
            return [.warn("refused a Hello from '\(name)': its client nonce has \(clientNonce.count) bytes", peer: origin.peer),
                    .reply(id, .refusal(.malformed, "the client nonce has \(clientNonce.count) bytes; at least \(JoinHandshake.minimumNonceBytes) fresh random bytes are required"))]
        }
        // A Hello re-sent by REQ: the challenge it already has, and no attempt counted.
        if let open = handshake.challenge(forClientNonce: clientNonce, now: now) {
            resentRequests += 1
            return [.reply(id, .challenge(serverNonce: open))]
        }
        let host = JoinRateLimit.host(ofPeer: origin.peer)
        guard joinLimit.admit(host: host, now: now) else {
            let limit = settings.joinAttemptsPerMinute ?? 0
            let wait = Int(joinLimit.retryAfter(host: host, now: now).rounded(.up))
            return [.warn("refused a join attempt from \(host): more than \(limit) in a minute (security.join_attempts_per_minute = \(limit))", peer: origin.peer),
                    .reply(id, .refusal(.overloaded, "more than \(limit) join attempts from \(host) in a minute, the limit (security.join_attempts_per_minute) is \(limit): try again in \(wait) s"))]
        }
        let nonce = entropy.prefix(JoinHandshake.nonceBytes)
        handshake.issue(serverNonce: nonce, clientNonce: clientNonce, now: now)
        return [.reply(id, .challenge(serverNonce: nonce))]
    }

    mutating func join(_ id: RequestID, _ origin: Origin, name: String, clientNonce: Data, serverNonce: Data, mac: Data,
                               signature: String, entropy: Data, now: Double) -> [Directive] {
        guard clientNonce.count >= JoinHandshake.minimumNonceBytes else {
            return [.warn("refused a join from '\(name)': its client nonce has \(clientNonce.count) bytes", peer: origin.peer),
                    .reply(id, .refusal(.malformed, "the client nonce has \(clientNonce.count) bytes; at least \(JoinHandshake.minimumNonceBytes) are required"))]
        }
        // A Proof re-sent by REQ after its Welcome: the same Welcome, on the same connection only.
        if let w = welcomes[serverNonce], w.clientNonce == clientNonce, w.mac == mac,
           let member = membership.members[w.session], member.pipe == origin.pipe {
            resentRequests += 1
            return [.reply(id, .welcome(workerID: w.workerID, session: w.session, serverMAC: w.serverMAC))]
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
        if let limit = settings.maxWorkers, membership.count >= limit {
            return [.warn("refused worker '\(name)': the run has \(membership.count) workers (security.max_workers = \(limit))", peer: origin.peer),
                    .reply(id, .refusal(.overloaded, "the run has \(membership.count) workers, the limit (security.max_workers) is \(limit): try again when one leaves, or raise security.max_workers"))]
        }
        // A deterministic run needs the same bits from every worker for the same micro-batch; the
        // signature was fixed before anyone joined.
        if let required = computeSignature, required != signature {
            let theirs = signature.isEmpty ? "(not reported)" : signature
            let advice = Self.signatureAdvice(worker: signature, required: required)
            return [.warn("refused worker '\(name)': it computes with \(theirs), the run needs \(required) (deterministic: true; \(settings.computeSignatureOrigin))", peer: origin.peer),
                    .reply(id, .refusal(.incompatible, "deterministic: true needs every worker to compute the same bits: this worker computes with \(theirs), the run needs \(required) (\(settings.computeSignatureOrigin)). \(advice)"))]
        }
        let session = SessionID(entropy.suffix(JoinHandshake.sessionBytes))
        let member = membership.join(name: name, session: session, pipe: origin.pipe, now: now)
        workerNames.insert(name)
        emptySince = nil
        let serverMAC = handshake.serverMAC(clientNonce: clientNonce, serverNonce: serverNonce, session: session.bytes)
        welcomes[serverNonce] = (session, clientNonce, mac, serverMAC, member.id)
        var out: [Directive] = [
            .memberJoined(member, peer: origin.peer),
            .reply(id, .welcome(workerID: member.id, session: session, serverMAC: serverMAC)),
        ]
        if phase == .waitingForWorkers, membership.count >= settings.minWorkers {
            phase = .training(step: step)
            stepStarted = now
            out.append(.startedTraining(step: step, workers: membership.count))
        }
        return out + serveHeld(now: now)
    }
}

extension RunStateMachine {
    /// What to change when a worker's compute signature ("openblas Haswell, kernels avx2+fma")
    /// is not the run's: the part that differs, and the setting that fixes it.
    static func signatureAdvice(worker: String, required: String) -> String {
        func parts(_ s: String) -> (blas: String?, kernels: String?) {
            var blas: String?, kernels: String?
            for part in s.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
                if part.hasPrefix("openblas ") { blas = String(part.dropFirst("openblas ".count)) }
                if part.hasPrefix("kernels ") { kernels = String(part.dropFirst("kernels ".count)) }
            }
            return (blas, kernels)
        }
        guard !worker.isEmpty else {
            return "This worker did not report what it computes with: run csptrain's own worker, of the coordinator's version."
        }
        let (w, r) = (parts(worker), parts(required))
        var changes: [String] = []
        if let rb = r.blas, w.blas != rb {
            changes.append("start this worker with OPENBLAS_CORETYPE=\(rb) (its CPU must support those kernels)")
        }
        if let rk = r.kernels, w.kernels != rk {
            changes.append("run it on a CPU with csptrain's \(rk) kernels (they follow the CPU: avx512f+fma, avx2+fma or generic)")
        }
        let fix = changes.isEmpty ? "Run it on a machine of the same CPU type" : "To join, " + changes.joined(separator: ", and ")
        return "\(fix); or, if every worker of the run computes with '\(worker)', set compute_signature: '\(worker)' in the run's configuration and restart the coordinator (its checkpoints keep the signature they were made with)."
    }
}

extension RunStateMachine {
    /// The member a chunk stream belongs to, when `mac` proves it (``JoinHandshake/streamMAC``)
    /// for the nonce the coordinator sent on that stream; nil otherwise. The stream's chunks then
    /// count as the member's own connection's: its session stays valid on that one only.
    public func streamMember(session: SessionID, serverNonce: Data, mac: Data) -> Membership.Member? {
        guard let member = membership.members[session],
              handshake.verifyStream(serverNonce: serverNonce, session: session.bytes, mac: mac) else { return nil }
        return member
    }
}
