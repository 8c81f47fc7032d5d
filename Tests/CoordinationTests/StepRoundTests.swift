import Foundation
import Testing
@testable import Coordination

struct ChunkGridTests {
    // Tensors of 10 and 3 values cut into chunks of 4: [4, 4, 2] and [3].
    let grid = ChunkGrid(tensors: [(0, 10), (10, 3)], chunkValues: 4)

    /// The chunk size a run uses: chunk_values for models of 16 such chunks or more, 1/16 of a
    /// smaller model (rounded up, at least 16 Ki values), and chunk_values as set with
    /// chunks_per_model 0 or a chunk_values below the floor.
    @Test func chunkSizeFollowsTheModelsSize() {
        var c = CoordinatorSettings()
        #expect(c.chunkValues(forValues: 10_000_000) == 262_144)
        #expect(c.chunkValues(forValues: 16 * 262_144) == 262_144)
        #expect(c.chunkValues(forValues: 1_000_000) == 62_500)
        #expect(c.chunkValues(forValues: 1_000_001) == 62_501)
        #expect(c.chunkValues(forValues: 2_900_000) == 181_250)
        #expect(c.chunkValues(forValues: 100) == 16_384)
        c.chunkValues = 4096
        #expect(c.chunkValues(forValues: 1_000_000) == 4096)
        c.chunkValues = 262_144
        c.chunksPerModel = 0
        #expect(c.chunkValues(forValues: 1_000_000) == 262_144)
        c.chunksPerModel = 4
        #expect(c.chunkValues(forValues: 400_000) == 100_000)
    }

    @Test func chunkCountsOffsetsAndSizes() {
        #expect(grid.tensorChunkCounts == [3, 1])
        #expect(grid.totalChunks == 4)
        #expect((0 ..< 3).map { grid.offset(tensor: 0, chunk: $0) } == [0, 4, 8])
        #expect((0 ..< 3).map { grid.valueCount(tensor: 0, chunk: $0) } == [4, 4, 2])
        #expect(grid.offset(tensor: 1, chunk: 0) == 10)
        #expect(grid.valueCount(tensor: 1, chunk: 0) == 3)
        // Every key is distinct and dense.
        let keys = [grid.key(tensor: 0, chunk: 0), grid.key(tensor: 0, chunk: 1), grid.key(tensor: 0, chunk: 2), grid.key(tensor: 1, chunk: 0)]
        #expect(keys == [0, 1, 2, 3])
    }
}

struct StepRoundTests {
    let a = SessionID(Data([1]))
    let b = SessionID(Data([2]))
    let grid = ChunkGrid(tensors: [(0, 10), (10, 3)], chunkValues: 4)

    func round() -> StepRound {
        StepRound(step: 5, weightsVersion: 6, microBatches: [[0, 1, 2], [3, 4]], grid: grid)
    }

    /// Sends chunk (tensor, chunk) of micro-batch `mb` with correct geometry.
    func send(_ r: inout StepRound, mb: Int, tensor: Int, chunk: Int, step: Int = 5, version: UInt64 = 6) -> StepRound.ChunkVerdict {
        r.receive(step: step, weightsVersion: version, microBatch: mb, tensor: tensor, chunkIndex: chunk,
                  chunkCount: grid.tensorChunkCounts[tensor], exampleCount: r.microBatches[mb].examples.count,
                  valueCount: grid.valueCount(tensor: tensor, chunk: chunk))
    }

    @Test func everyChunkIsAcceptedOnceAndCompletesTheStep() {
        var r = round()
        #expect(r.assign(to: a, deadline: 10) == 0)
        #expect(r.assign(to: b, deadline: 10) == 1)
        #expect(r.assign(to: a, deadline: 10) == nil)
        var accepted = 0
        for mb in 0 ..< 2 {
            for (t, n) in grid.tensorChunkCounts.enumerated() {
                for c in 0 ..< n {
                    if case .accept = send(&r, mb: mb, tensor: t, chunk: c) { accepted += 1 }
                }
            }
        }
        #expect(accepted == 8)
        #expect(r.isComplete)
        #expect(r.duplicates == 0)
    }

    @Test func acceptReportsOffsetWeightAndFirstAndLast() {
        var r = round()
        _ = r.assign(to: a, deadline: 10)
        #expect(send(&r, mb: 0, tensor: 0, chunk: 2) == .accept(offset: 8, examples: 3, firstOfMicroBatch: true, completesMicroBatch: false))
        #expect(send(&r, mb: 0, tensor: 0, chunk: 0) == .accept(offset: 0, examples: 3, firstOfMicroBatch: false, completesMicroBatch: false))
        #expect(send(&r, mb: 0, tensor: 1, chunk: 0) == .accept(offset: 10, examples: 3, firstOfMicroBatch: false, completesMicroBatch: false))
        #expect(send(&r, mb: 0, tensor: 0, chunk: 1) == .accept(offset: 4, examples: 3, firstOfMicroBatch: false, completesMicroBatch: true))
        #expect(!r.isComplete)
    }

    @Test func duplicatesAreDroppedAndCounted() {
        var r = round()
        _ = r.assign(to: a, deadline: 10)
        #expect(send(&r, mb: 0, tensor: 0, chunk: 0) != .duplicate)
        #expect(send(&r, mb: 0, tensor: 0, chunk: 0) == .duplicate)  // a REQ re-send
        #expect(r.duplicates == 1)
        #expect(r.microBatches[0].receivedCount == 1)
    }

    @Test func staleChunksAreDropped() {
        var r = round()
        _ = r.assign(to: a, deadline: 10)
        #expect(send(&r, mb: 0, tensor: 0, chunk: 0, step: 4) == .stale)
        #expect(send(&r, mb: 0, tensor: 0, chunk: 0, version: 5) == .stale)
        #expect(r.microBatches[0].receivedCount == 0)
    }

    /// A worker dies mid-send; its micro-batch goes to another, whose copies of the chunks that
    /// already arrived are duplicates: each chunk is counted exactly once.
    @Test func reassignedMicroBatchIsCountedExactlyOnce() {
        var r = round()
        #expect(r.assign(to: a, deadline: 10) == 0)
        _ = send(&r, mb: 0, tensor: 0, chunk: 0)
        _ = send(&r, mb: 0, tensor: 0, chunk: 1)
        #expect(r.release(a) == [0])
        #expect(r.assign(to: b, deadline: 10) == 0)
        #expect(r.reassignments == 1)
        var verdicts: [StepRound.ChunkVerdict] = []
        for (t, n) in grid.tensorChunkCounts.enumerated() { for c in 0 ..< n { verdicts.append(send(&r, mb: 0, tensor: t, chunk: c)) } }
        #expect(verdicts.filter { $0 == .duplicate }.count == 2)
        #expect(verdicts.filter { if case .accept = $0 { true } else { false } }.count == 2)
        #expect(r.microBatches[0].status == .complete)
        // The late original sender's remaining chunks change nothing.
        #expect(send(&r, mb: 0, tensor: 1, chunk: 0) == .duplicate)
    }

    @Test func expiredAssignmentsReturnToPending() {
        var r = round()
        _ = r.assign(to: a, deadline: 10)
        _ = r.assign(to: b, deadline: 20)
        #expect(r.expire(now: 5).isEmpty)
        let late = r.expire(now: 15)
        #expect(late.count == 1 && late[0].session == a && late[0].microBatch == 0)
        #expect(r.microBatches[0].status == .pending)
        #expect(r.assignee(of: 1) == b)
    }

    @Test func protocolViolationsAreNamed() {
        var r = round()
        func reason(_ v: StepRound.ChunkVerdict) -> String? { if case let .invalid(s) = v { s } else { nil } }
        #expect(reason(r.receive(step: 6, weightsVersion: 7, microBatch: 0, tensor: 0, chunkIndex: 0, chunkCount: 3, exampleCount: 3, valueCount: 4))?.contains("step 6") == true)
        #expect(reason(r.receive(step: 5, weightsVersion: 6, microBatch: 9, tensor: 0, chunkIndex: 0, chunkCount: 3, exampleCount: 3, valueCount: 4))?.contains("micro-batch 9") == true)
        #expect(reason(r.receive(step: 5, weightsVersion: 6, microBatch: 0, tensor: 7, chunkIndex: 0, chunkCount: 3, exampleCount: 3, valueCount: 4))?.contains("tensor 7") == true)
        #expect(reason(r.receive(step: 5, weightsVersion: 6, microBatch: 0, tensor: 0, chunkIndex: 0, chunkCount: 2, exampleCount: 3, valueCount: 4))?.contains("has 3 chunks") == true)
        #expect(reason(r.receive(step: 5, weightsVersion: 6, microBatch: 0, tensor: 0, chunkIndex: 3, chunkCount: 3, exampleCount: 3, valueCount: 4))?.contains("chunk index 3") == true)
        #expect(reason(r.receive(step: 5, weightsVersion: 6, microBatch: 0, tensor: 0, chunkIndex: 2, chunkCount: 3, exampleCount: 3, valueCount: 4))?.contains("must carry 2 values") == true)
        #expect(reason(r.receive(step: 5, weightsVersion: 6, microBatch: 0, tensor: 0, chunkIndex: 0, chunkCount: 3, exampleCount: 9, valueCount: 4))?.contains("has 3 examples") == true)
        #expect(r.microBatches.allSatisfy { $0.receivedCount == 0 })
    }
}

struct JoinHandshakeTests {
    let token = Array("s3cret".utf8)
    let client = Data(repeating: 1, count: 32)
    let server = Data(repeating: 2, count: 32)

    @Test func rightProofIsAcceptedOnce() {
        var h = JoinHandshake(token: token, runID: "run-a")
        h.issue(serverNonce: server, clientNonce: client, now: 0)
        let mac = JoinHandshake.joinMAC(token: token, runID: "run-a", serverNonce: server, clientNonce: client, workerName: "w")
        #expect(h.verify(workerName: "w", clientNonce: client, serverNonce: server, mac: mac, now: 1) == .accepted)
        // A replayed proof finds no open challenge.
        #expect(h.verify(workerName: "w", clientNonce: client, serverNonce: server, mac: mac, now: 1) == .unknownChallenge)
    }

    @Test func wrongTokenIsRefused() {
        var h = JoinHandshake(token: token, runID: "run-a")
        h.issue(serverNonce: server, clientNonce: client, now: 0)
        let mac = JoinHandshake.joinMAC(token: Array("guess".utf8), runID: "run-a", serverNonce: server, clientNonce: client, workerName: "w")
        #expect(h.verify(workerName: "w", clientNonce: client, serverNonce: server, mac: mac, now: 1) == .badProof)
    }

    @Test func proofIsBoundToRunNameAndNonces() {
        let mac = JoinHandshake.joinMAC(token: token, runID: "run-a", serverNonce: server, clientNonce: client, workerName: "w")
        for (run, name) in [("run-b", "w"), ("run-a", "x")] {
            var h = JoinHandshake(token: token, runID: run)
            h.issue(serverNonce: server, clientNonce: client, now: 0)
            #expect(h.verify(workerName: name, clientNonce: client, serverNonce: server, mac: mac, now: 0) == .badProof)
        }
    }

    @Test func challengesExpire() {
        var h = JoinHandshake(token: token, runID: "r", challengeLifetime: 30)
        h.issue(serverNonce: server, clientNonce: client, now: 0)
        let mac = JoinHandshake.joinMAC(token: token, runID: "r", serverNonce: server, clientNonce: client, workerName: "w")
        #expect(h.verify(workerName: "w", clientNonce: client, serverNonce: server, mac: mac, now: 31) == .unknownChallenge)
    }

    @Test func openChallengesAreBounded() {
        var h = JoinHandshake(token: token, runID: "r", maxOpenChallenges: 2)
        for i in 0 ..< 3 { h.issue(serverNonce: Data([UInt8(i)]), clientNonce: Data(repeating: UInt8(i), count: 16), now: Double(i)) }
        let mac = JoinHandshake.joinMAC(token: token, runID: "r", serverNonce: Data([0]), clientNonce: client, workerName: "w")
        #expect(h.verify(workerName: "w", clientNonce: client, serverNonce: Data([0]), mac: mac, now: 3) == .unknownChallenge)
    }

    @Test func serverProofMatchesWorkerComputation() {
        let h = JoinHandshake(token: token, runID: "r")
        let session = Data(repeating: 9, count: 16)
        #expect(h.serverMAC(clientNonce: client, serverNonce: server, session: session)
            == JoinHandshake.welcomeMAC(token: token, runID: "r", clientNonce: client, serverNonce: server, session: session))
    }
}

struct MembershipTests {
    @Test func disconnectRemovesMembersOfThatPipeAndCountsFailures() {
        var m = Membership()
        let s1 = SessionID(Data([1])), s2 = SessionID(Data([2]))
        _ = m.join(name: "a", session: s1, pipe: 10, now: 0)
        _ = m.join(name: "b", session: s2, pipe: 11, now: 0)
        #expect(m.removeAll(onPipe: 10).map(\.name) == ["a"])
        #expect(m.count == 1)
        #expect(m.failedTotal == 1)
        m.remove(s2, reason: .left)
        #expect(m.failedTotal == 1)
        #expect(m.joinedTotal == 2)
    }

    @Test func aBusyCoordinatorPardonsOnlyThoseItCouldNotHear() {
        var m = Membership()
        let s1 = SessionID(Data([1])), s2 = SessionID(Data([2]))
        _ = m.join(name: "a", session: s1, pipe: 10, now: 100)
        _ = m.join(name: "b", session: s2, pipe: 11, now: 130)
        // Busy from t = 120 for 16 s: a (last heard at 100) gets the 16 s back, b spoke after.
        m.pardon(seconds: 16, before: 120)
        #expect(m.members[s1]?.lastSeen == 116 && m.members[s2]?.lastSeen == 130)
    }

    @Test func aSessionIsValidOnlyOnThePipeThatJoinedIt() {
        var m = Membership()
        let s = SessionID(Data([1]))
        let a = m.join(name: "a", session: s, pipe: 10, now: 0)
        // Another connection with the session: refused, and it does not count as the member's activity.
        #expect(m.touch(s, pipe: 12, now: 5) == .otherPipe(a))
        #expect(m.members[s]?.lastSeen == 0 && m.members[s]?.pipe == 10)
        // Closing that other connection leaves the member alone; its own pipe still works.
        #expect(m.removeAll(onPipe: 12).isEmpty)
        guard case let .member(member) = m.touch(s, pipe: 10, now: 6) else { Issue.record("the member's own pipe was refused"); return }
        #expect(member.lastSeen == 6)
        #expect(m.touch(SessionID(Data([9])), pipe: 1, now: 1) == .unknown)
    }
}

struct DataOrderTests {
    @Test func everyExampleOncePerEpochInMicroBatchesOfNearEqualSize() {
        var order = DataOrder(seed: 7, examples: 100, globalBatch: 20, microBatches: 3)
        var seen: [Int] = []
        for step in 0 ..< 5 {
            let mbs = order.microBatches(forStep: step)
            #expect(mbs.map(\.count) == [7, 7, 6])
            seen += mbs.flatMap { $0 }
        }
        #expect(seen.sorted() == Array(0 ..< 100))
        #expect(seen != Array(0 ..< 100))  // shuffled
    }

    @Test func orderIsAPureFunctionOfSeedAndStep() {
        var a = DataOrder(seed: 7, examples: 50, globalBatch: 16, microBatches: 4)
        var b = DataOrder(seed: 7, examples: 50, globalBatch: 16, microBatches: 4)
        let later = a.microBatches(forStep: 9)
        _ = b.microBatches(forStep: 0)
        #expect(b.microBatches(forStep: 9) == later)
        var c = DataOrder(seed: 8, examples: 50, globalBatch: 16, microBatches: 4)
        #expect(c.microBatches(forStep: 9) != later)
        #expect(a.epoch(ofStep: 3) == 0 && a.epoch(ofStep: 4) == 1)
    }
}

struct LengthGroupingTests {
    // Costs 1...N in a scrambled order, so index order says nothing about length.
    static func costs(_ n: Int) -> [Int] { (0 ..< n).map { ($0 * 37) % n + 1 } }

    @Test(arguments: [(96, 16), (100, 16), (50, 16)])
    func everyExampleOncePerEpochAcrossEpochBoundaries(examples: Int, batch: Int) {
        var order = DataOrder(seed: 3, examples: examples, globalBatch: batch, microBatches: 2,
                              costs: Self.costs(examples), groupingWindow: 2)
        // Whole epochs that end on a step boundary: every example the same number of times.
        var total = examples
        while total % batch != 0 { total += examples }
        var counts = [Int](repeating: 0, count: examples)
        for step in 0 ..< total / batch {
            let examplesOfStep = order.microBatches(forStep: step).flatMap { $0 }
            #expect(examplesOfStep.count == batch)
            let straddles = step * batch / examples != ((step + 1) * batch - 1) / examples
            if !straddles { #expect(Set(examplesOfStep).count == batch, "step \(step) repeats an example") }
            for e in examplesOfStep { counts[e] += 1 }
        }
        #expect(counts.allSatisfy { $0 == total / examples })
    }

    @Test func stepsHoldSimilarLengthsAndMicroBatchesAreBalanced() {
        let n = 960, costs = Self.costs(n)
        var grouped = DataOrder(seed: 5, examples: n, globalBatch: 16, microBatches: 2, costs: costs, groupingWindow: 10)
        var plain = DataOrder(seed: 5, examples: n, globalBatch: 16, microBatches: 2)
        // Padding: a micro-batch costs its longest utterance times its size.
        func waste(_ order: inout DataOrder) -> Double {
            var padded = 0, useful = 0
            for step in 0 ..< n / 16 {
                for mb in order.microBatches(forStep: step) {
                    padded += mb.count * mb.map { costs[$0] }.max()!
                    useful += mb.map { costs[$0] }.reduce(0, +)
                }
            }
            return 1 - Double(useful) / Double(padded)
        }
        let groupedWaste = waste(&grouped), plainWaste = waste(&plain)
        #expect(groupedWaste < 0.12, "padding \(groupedWaste)")  // windows of 160 of 960 spread costs: about 10%
        #expect(plainWaste > 0.3, "padding \(plainWaste)")  // the longest of 8 uniform draws: about 44%
        for step in 0 ..< 20 {
            let mbs = grouped.microBatches(forStep: step)
            #expect(mbs.map(\.count) == [8, 8])
            let loads = mbs.map { $0.map { costs[$0] }.reduce(0, +) }
            #expect(abs(loads[0] - loads[1]) <= mbs.joined().map { costs[$0] }.max()!)
        }
    }

    @Test func groupedStepsAreStillShuffledAndDeterministic() {
        let costs = Self.costs(320)
        var a = DataOrder(seed: 5, examples: 320, globalBatch: 16, microBatches: 2, costs: costs, groupingWindow: 20)
        var b = DataOrder(seed: 5, examples: 320, globalBatch: 16, microBatches: 2, costs: costs, groupingWindow: 20)
        let firstLengths = (0 ..< 20).map { step in a.microBatches(forStep: step).joined().map { costs[$0] }.max()! }
        // Not sorted from short to long over the epoch: the batches themselves are shuffled.
        #expect(firstLengths != firstLengths.sorted() && firstLengths != firstLengths.sorted(by: >))
        _ = b.microBatches(forStep: 30)
        #expect(b.microBatches(forStep: 7) == a.microBatches(forStep: 7))
        // Without a window, costs change nothing.
        var off = DataOrder(seed: 5, examples: 320, globalBatch: 16, microBatches: 2, costs: costs, groupingWindow: 0)
        var plain = DataOrder(seed: 5, examples: 320, globalBatch: 16, microBatches: 2)
        #expect(off.microBatches(forStep: 3) == plain.microBatches(forStep: 3))
    }
}

struct EvalRoundTests {
    let a = SessionID(Data([1])), b = SessionID(Data([2]))

    @Test func batchesCoverEachSetAndCountOnce() {
        var r = EvalRound(step: 10, weightsVersion: 11, sets: [("valid_channel", 3), ("valid", 5)], batchSize: 2)
        #expect(r.batches.map(\.set) == ["valid", "valid", "valid", "valid_channel", "valid_channel"])
        #expect(r.batches.map(\.examples) == [[0, 1], [2, 3], [4], [0, 1], [2]])
        #expect(r.assign(to: a, deadline: 5) == 0)
        #expect(r.receive(batch: 0, set: "valid", weightsVersion: 11) == .accept)
        #expect(r.receive(batch: 0, set: "valid", weightsVersion: 11) == .duplicate)
        #expect(r.receive(batch: 1, set: "valid", weightsVersion: 10) == .stale)
        if case .invalid = r.receive(batch: 1, set: "valid_channel", weightsVersion: 11) {} else { Issue.record("wrong set accepted") }
        if case .invalid = r.receive(batch: 9, set: "valid", weightsVersion: 11) {} else { Issue.record("unknown batch accepted") }
        for i in 1 ..< 5 { _ = r.receive(batch: i, set: r.batches[i].set, weightsVersion: 11) }
        #expect(r.isComplete)
    }

    @Test func failedWorkersBatchesGoBackToThePool() {
        var r = EvalRound(step: 1, weightsVersion: 2, sets: [("valid", 4)], batchSize: 2)
        _ = r.assign(to: a, deadline: 5)
        _ = r.assign(to: b, deadline: 50)
        #expect(r.release(a) == [0])
        #expect(r.expire(now: 60).map(\.batch) == [1])
        #expect(r.assign(to: b, deadline: 100) == 0)
    }
}

struct LedgerTests {
    /// The ledger's entries are the step's examples by epoch; every epoch, once complete, has
    /// used each example exactly once, and its entries leave the open list for a summary.
    @Test func epochsCompleteWithEveryExampleOnce() {
        var order = DataOrder(seed: 3, examples: 50, globalBatch: 16, microBatches: 3, costs: (0 ..< 50).map { $0 % 7 }, groupingWindow: 2)
        var ledger = RunLedger(examplesPerEpoch: 50)
        var perEpoch: [Int: [Int]] = [:]
        var completed: [Int] = []
        for step in 0 ..< 20 {
            let parts = order.examplesByEpoch(forStep: step)
            // The same examples as the micro-batches, only in data order.
            #expect(parts.flatMap(\.examples).sorted() == order.microBatches(forStep: step).flatMap { $0 }.sorted())
            let (entries, done) = ledger.record(step: step + 1, parts: parts)
            #expect(entries.map(\.step).allSatisfy { $0 == step + 1 })
            for e in entries { perEpoch[e.epoch, default: []] += e.examples }
            completed += done.map(\.epoch)
        }
        // 20 steps × 16 = 320 examples: epochs 0 … 5 complete, epoch 6 holds 20.
        #expect(completed == [0, 1, 2, 3, 4, 5])
        for e in 0 ... 5 { #expect(perEpoch[e]!.sorted() == Array(0 ..< 50), "epoch \(e)") }
        #expect(ledger.open.allSatisfy { $0.epoch == 6 } && ledger.appliedCount(epoch: 6) == 20)
        #expect(ledger.completed.map(\.examples) == [50, 50, 50, 50, 50, 50])
        // A step straddling a boundary finishes one epoch and starts the next.
        #expect(order.examplesByEpoch(forStep: 3).map(\.epoch) == [0, 1])
    }
}
