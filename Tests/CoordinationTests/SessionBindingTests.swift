import Foundation
import Testing
@testable import Coordination
import Tensors

/// Sessions bound to the connection that joined them, REQ re-sends, join limits and the run's
/// compute signature (issue 12), one behaviour per test.
struct SessionBindingTests {
    func makeShell(_ change: (inout RunStateMachine.Settings) -> Void = { _ in }) -> SimulatedShell {
        SimulatedShell(TestRun.settings(totalSteps: 3, change))
    }

    @Test func aSessionUsedFromAnotherConnectionIsRefusedAndTheMemberKeepsItsWork() throws {
        let shell = makeShell()
        let a = try shell.joined("a", pipe: 1)
        let task = try #require(shell.task(shell.askForWork(a)))
        var thief = a
        thief.pipe = 9
        #expect(shell.refusal(shell.askForWork(thief)) == .unknownSession)
        #expect(shell.refusal(shell.sendChunk(thief, task)) == .unknownSession)
        #expect(shell.refusal(shell.send(.leave(reason: "bye"), from: shell.origin(thief))) == .unknownSession)
        #expect(shell.folds == 0)
        #expect(shell.warnings.filter { $0.contains("from another connection") }.count == 3)
        // Closing the thief's connection does not drop the member.
        shell.handle(.pipeClosed(9, now: shell.now))
        #expect(shell.machine.membership.members[a.session]?.pipe == 1)
        #expect(shell.machine.round.assignee(of: task.index) == a.session)
        #expect(shell.machine.borrowedSessionRefusals == 3)
        // The member's own requests are served as before.
        let acks = shell.sendAllChunks(a, task)
        #expect(acks.allSatisfy { shell.response($0) == .ack(.accepted) })
    }

    /// A chunk stream counts as its member's connection only with a proof made with the run's
    /// token, for the nonce sent on that stream and for that member's session.
    @Test func aChunkStreamBelongsToAMemberOnlyWithItsProof() throws {
        let shell = makeShell()
        let a = try shell.joined("a", pipe: 1)
        let b = try shell.joined("b", pipe: 2)
        let nonce = Data((0 ..< 32).map { UInt8($0) })
        func mac(_ session: SessionID, token: [UInt8] = TestRun.token, runID: String = TestRun.id, nonce: Data = nonce) -> Data {
            JoinHandshake.streamMAC(token: token, runID: runID, serverNonce: nonce, session: session.bytes)
        }
        #expect(shell.machine.streamMember(session: a.session, serverNonce: nonce, mac: mac(a.session))?.pipe == 1)
        #expect(shell.machine.streamMember(session: b.session, serverNonce: nonce, mac: mac(b.session))?.name == "b")
        // Another member's proof, another token, another run, another nonce (a replayed proof).
        #expect(shell.machine.streamMember(session: a.session, serverNonce: nonce, mac: mac(b.session)) == nil)
        #expect(shell.machine.streamMember(session: a.session, serverNonce: nonce, mac: mac(a.session, token: [UInt8](repeating: 1, count: 32))) == nil)
        #expect(shell.machine.streamMember(session: a.session, serverNonce: nonce, mac: mac(a.session, runID: "other")) == nil)
        #expect(shell.machine.streamMember(session: a.session, serverNonce: Data(repeating: 7, count: 32), mac: mac(a.session)) == nil)
        // A session that is no member (any more), however well proven.
        shell.handle(.pipeClosed(1, now: shell.now))
        #expect(shell.machine.streamMember(session: a.session, serverNonce: nonce, mac: mac(a.session)) == nil)
    }

    @Test func theThiefsRequestsDoNotKeepADeadMemberAlive() throws {
        let shell = makeShell { $0.stepDeadlineSeconds = 5 }
        let a = try shell.joined("a", pipe: 1)
        _ = try #require(shell.task(shell.askForWork(a)))
        var thief = a
        thief.pipe = 9
        for t in stride(from: 1.0, through: 8, by: 1) {
            shell.tick(at: t)
            shell.askForWork(thief)
        }
        #expect(shell.machine.membership.members[a.session] == nil, "dropped at its deadline whatever the thief sent")
    }

    @Test func emptyAndShortClientNoncesAreRefusedAtHelloAndAtProof() throws {
        let shell = makeShell()
        for nonce in [Data(), Data(repeating: 7, count: JoinHandshake.minimumNonceBytes - 1)] {
            let hello = shell.send(.hello(workerName: "m", clientNonce: nonce), from: shell.origin(pipe: 1))
            #expect(shell.refusal(hello) == .malformed)
        }
        // A proof with an empty nonce for a real challenge, MAC and all: refused before it is checked.
        let good = Data(repeating: 3, count: 32)
        guard case let .challenge(serverNonce)? = shell.response(shell.send(.hello(workerName: "m", clientNonce: good), from: shell.origin(pipe: 1))) else {
            throw HarnessError("no challenge")
        }
        let mac = JoinHandshake.joinMAC(token: TestRun.token, runID: TestRun.id, serverNonce: serverNonce, clientNonce: Data(), workerName: "m")
        let proof = shell.send(.proof(workerName: "m", clientNonce: Data(), serverNonce: serverNonce, mac: mac, computeSignature: ""),
                               from: shell.origin(pipe: 1))
        #expect(shell.refusal(proof) == .malformed)
        #expect(shell.machine.membership.count == 0)
    }

    @Test func reSentRequestsGetTheSameAnswerAndHaveNoSecondEffect() throws {
        let shell = makeShell()
        let clientNonce = Data(repeating: 5, count: 32)
        let hello = Inbound.hello(workerName: "a", clientNonce: clientNonce)
        let c1 = shell.send(hello, from: shell.origin(pipe: 1)), c2 = shell.send(hello, from: shell.origin(pipe: 1))
        guard case let .challenge(serverNonce)? = shell.response(c1) else { throw HarnessError("no challenge") }
        #expect(shell.response(c2) == shell.response(c1))
        let mac = JoinHandshake.joinMAC(token: TestRun.token, runID: TestRun.id, serverNonce: serverNonce, clientNonce: clientNonce, workerName: "a")
        let proof = Inbound.proof(workerName: "a", clientNonce: clientNonce, serverNonce: serverNonce, mac: mac, computeSignature: "")
        let w1 = shell.send(proof, from: shell.origin(pipe: 1)), w2 = shell.send(proof, from: shell.origin(pipe: 1))
        guard case let .welcome(_, session, _)? = shell.response(w1) else { throw HarnessError("not welcomed") }
        #expect(shell.response(w2) == shell.response(w1))
        #expect(shell.machine.membership.count == 1 && shell.machine.membership.joinedTotal == 1)
        let a = TestWorker(name: "a", pipe: 1, session: session)

        let t1 = try #require(shell.task(shell.askForWork(a)))
        let t2 = try #require(shell.task(shell.askForWork(a)))
        #expect(t1 == t2 && shell.machine.round.microBatches[t1.index].assignments == 1)
        let first = shell.sendChunk(a, t1)
        let foldsBefore = shell.folds
        let again = shell.sendChunk(a, t1)
        #expect(shell.response(again) == shell.response(first) && shell.response(first) == .ack(.accepted))
        #expect(shell.folds == foldsBefore && shell.machine.duplicateChunks == 0)
        // Once a chunk is in, asking again is a new request: the next micro-batch.
        let next = try #require(shell.task(shell.askForWork(a)))
        #expect(next.index != t1.index)

        let leave = Inbound.leave(reason: "done")
        let l1 = shell.send(leave, from: shell.origin(a)), l2 = shell.send(leave, from: shell.origin(a))
        #expect(shell.response(l1) == .finished(reason: "goodbye") && shell.response(l2) == shell.response(l1))
        #expect(shell.machine.membership.failedTotal == 0)
        #expect(shell.machine.resentRequests == 5)
    }

    @Test func aChunkReSentAfterItsStepWasAppliedIsStillAnsweredAsAccepted() throws {
        let shell = makeShell()
        let a = try shell.joined("a", pipe: 1)
        var acks: [(RequestID, TaskAssignment)] = []
        while shell.machine.step == 0 {
            let t = try #require(shell.task(shell.askForWork(a)))
            acks += shell.sendAllChunks(a, t).map { ($0, t) }
        }
        let (last, task) = try #require(acks.last)
        let foldsBefore = shell.folds
        let key = TestRun.chunkKeys.last!
        let again = shell.sendChunk(a, task, tensor: key.tensor, chunk: key.chunk)
        #expect(shell.response(again) == shell.response(last))
        #expect(shell.folds == foldsBefore && shell.machine.staleChunks == 0)
    }

    @Test func workersPastMaxWorkersAreRefusedNamingTheLimit() throws {
        let shell = makeShell { $0.maxWorkers = 2 }
        _ = try shell.joined("a", pipe: 1)
        let b = try shell.joined("b", pipe: 2)
        let reply = shell.join("c", pipe: 3)
        guard case let .refusal(.overloaded, reason)? = reply else { throw HarnessError("c was not refused: \(String(describing: reply))") }
        #expect(reason.contains("security.max_workers") && reason.contains("is 2"))
        #expect(shell.machine.membership.count == 2)
        shell.send(.leave(reason: "done"), from: shell.origin(b))
        _ = try shell.joined("c", pipe: 3)
    }

    @Test func joinAttemptsPastTheLimitPerHostAreRefusedNamingIt() throws {
        let shell = makeShell { $0.joinAttemptsPerMinute = 3 }
        func hello(_ peer: String, _ nonce: UInt8) -> Response? {
            var origin = shell.origin(pipe: 1)
            origin.peer = peer
            return shell.response(shell.send(.hello(workerName: "m", clientNonce: Data(repeating: nonce, count: 32)), from: origin))
        }
        for n in UInt8(1) ... 3 { #expect(refusalCode(hello("10.0.0.9:\(1000 + Int(n))", n)) == nil) }
        // A re-sent Hello is not another attempt.
        #expect(refusalCode(hello("10.0.0.9:1001", 1)) == nil)
        guard case let .refusal(.overloaded, reason)? = hello("10.0.0.9:2000", 4) else { throw HarnessError("not refused") }
        #expect(reason.contains("security.join_attempts_per_minute") && reason.contains("10.0.0.9"))
        #expect(refusalCode(hello("10.0.0.10:1000", 5)) == nil, "another host joins")
        shell.tick(at: 61)
        #expect(refusalCode(hello("10.0.0.9:3000", 6)) == nil, "a minute later")
    }

    @Test func aWorkerWithAnotherComputeSignatureIsRefusedEvenWhenItJoinsFirst() throws {
        let required = "openblas Haswell, kernels avx2+fma"
        let shell = makeShell {
            $0.computeSignature = required
            $0.computeSignatureOrigin = "compute_signature in the run's configuration"
        }
        func join(_ name: String, pipe: UInt32, signature: String) -> Response? {
            let clientNonce = shell.rng.bytes(32)
            guard case let .challenge(serverNonce)? = shell.response(shell.send(.hello(workerName: name, clientNonce: clientNonce), from: shell.origin(pipe: pipe))) else { return nil }
            let mac = JoinHandshake.joinMAC(token: TestRun.token, runID: TestRun.id, serverNonce: serverNonce, clientNonce: clientNonce, workerName: name)
            return shell.response(shell.send(.proof(workerName: name, clientNonce: clientNonce, serverNonce: serverNonce, mac: mac,
                                                    computeSignature: signature), from: shell.origin(pipe: pipe)))
        }
        let stranger = "openblas Prescott, kernels generic"
        guard case let .refusal(.incompatible, reason)? = join("first", pipe: 1, signature: stranger) else { throw HarnessError("not refused") }
        #expect(reason.contains(stranger) && reason.contains(required))
        #expect(reason.contains("OPENBLAS_CORETYPE=Haswell") && reason.contains("compute_signature"))
        #expect(shell.machine.computeSignature == required, "a worker's claim never sets it")
        guard case .welcome? = join("ours", pipe: 2, signature: required) else { throw HarnessError("the right signature was refused") }
        guard case .refusal(.incompatible, _)? = join("later", pipe: 3, signature: stranger) else { throw HarnessError("not refused") }
    }
}
