import Testing
@testable import Coordination

/// The weights gate's bookkeeping: every slot held is let go exactly once, by a receipt, a
/// closed connection, a failed send or an overdue receipt.
struct WeightsReceiptsTests {
    @Test func aReceiptLetsGoOfItsConnectionsCopiesUpToItsVersion() {
        var r = WeightsReceipts(patience: 1, confirmedPatience: 10)
        let held = [r.sent(pipe: 1, version: 3, now: 0), r.sent(pipe: 1, version: 4, now: 0), r.sent(pipe: 2, version: 4, now: 0)]
        #expect(held == [true, true, true])
        let first = r.received(pipe: 1, version: 3)
        let stranger = r.received(pipe: 3, version: 9)
        #expect(first == 1)
        #expect(stranger == 0, "another connection's receipt lets nothing go")
        #expect(r.outstanding == 2)
        let later = r.received(pipe: 1, version: 9), gone = r.closed(pipe: 2)
        #expect(later == 1 && gone == 1 && r.outstanding == 0)
        // A copy of a version the connection already holds (an answer to a REQ re-send) is not held.
        let again = r.sent(pipe: 1, version: 9, now: 1), newer = r.sent(pipe: 1, version: 10, now: 1)
        #expect(!again && newer)
    }

    @Test func aConnectionWithoutReceiptsIsWaitedForOnceThenNoMore() {
        var r = WeightsReceipts(patience: 0.5, confirmedPatience: 10)
        let held = [r.sent(pipe: 1, version: 1, now: 10), r.sent(pipe: 2, version: 1, now: 10.25)]
        #expect(held == [true, true])
        let early = r.expire(now: 10.25), due = r.expire(now: 10.5)
        #expect(early == 0 && due == 1)
        let heldAgain = r.sent(pipe: 1, version: 2, now: 10.5)
        #expect(!heldAgain, "pipe 1 sent no receipt in time: not held again")
        let second = r.expire(now: 10.75), twice = r.withdraw(pipe: 2, version: 1)
        #expect(second == 1)
        #expect(twice == 0, "a copy let go already is not let go twice")
        // A connection that confirms gets the longer patience, and a closed one starts afresh.
        let late = r.received(pipe: 1, version: 2), confirming = r.sent(pipe: 1, version: 3, now: 11)
        #expect(late == 0 && confirming)
        let notYet = r.expire(now: 20.9), overdue = r.expire(now: 21)
        #expect(notYet == 0 && overdue == 1)
        let closed = r.closed(pipe: 2), afresh = r.sent(pipe: 2, version: 4, now: 21)
        #expect(closed == 0 && afresh)
    }

    /// Seeded random sequences against a plain model of what is held.
    @Test func seededSequencesReleaseEverySlotExactlyOnce() {
        for seed in UInt64(1) ... 300 {
            var rng = SplitMix64(seed: seed)
            var r = WeightsReceipts(patience: 0.5, confirmedPatience: 2)
            var model: [(pipe: UInt32, version: UInt64, since: Double)] = []
            var confirmed: [UInt32: UInt64] = [:], silent: Set<UInt32> = []
            var now = 0.0, taken = 0, released = 0
            for _ in 0 ..< 200 {
                now += Double(rng.next() % 100) / 1000
                let pipe = UInt32(rng.next() % 4), version = rng.next() % 6
                var expected = 0, got = 0
                switch rng.next() % 5 {
                case 0, 1:
                    let hold = !silent.contains(pipe) && (confirmed[pipe].map { version > $0 } ?? true)
                    let held = r.sent(pipe: pipe, version: version, now: now)
                    #expect(held == hold, "seed \(seed)")
                    if hold {
                        model.append((pipe, version, now))
                        taken += 1
                    }
                case 2:
                    confirmed[pipe] = max(confirmed[pipe] ?? 0, version)
                    silent.remove(pipe)
                    expected = model.filter { $0.pipe == pipe && $0.version <= version }.count
                    model.removeAll { $0.pipe == pipe && $0.version <= version }
                    got = r.received(pipe: pipe, version: version)
                case 3:
                    confirmed[pipe] = nil
                    silent.remove(pipe)
                    expected = model.filter { $0.pipe == pipe }.count
                    model.removeAll { $0.pipe == pipe }
                    got = r.closed(pipe: pipe)
                default:
                    if rng.next() % 2 == 0 {
                        let overdue = { (c: (pipe: UInt32, version: UInt64, since: Double)) in
                            now - c.since >= (confirmed[c.pipe] == nil ? 0.5 : 2)
                        }
                        for c in model where overdue(c) && confirmed[c.pipe] == nil { silent.insert(c.pipe) }
                        expected = model.filter(overdue).count
                        model.removeAll(where: overdue)
                        got = r.expire(now: now)
                    } else if let i = model.lastIndex(where: { $0.pipe == pipe && $0.version == version }) {
                        model.remove(at: i)
                        expected = 1
                        got = r.withdraw(pipe: pipe, version: version)
                    } else {
                        got = r.withdraw(pipe: pipe, version: version)
                    }
                }
                released += got
                #expect(got == expected, "seed \(seed)")
                #expect(r.outstanding == model.count && taken == released + r.outstanding, "seed \(seed)")
            }
            released += (0 ..< 4).reduce(0) { $0 + r.closed(pipe: $1) }
            #expect(released == taken && r.outstanding == 0, "seed \(seed)")
        }
    }
}
