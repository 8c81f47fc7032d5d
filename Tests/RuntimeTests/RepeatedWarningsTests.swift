@testable import Runtime
import Testing

/// A repeated warning: logged once, counted while it repeats, the count reported once its period
/// has passed, and kinds told apart by message and peer.
struct RepeatedWarningsTests {
    @Test func aBurstIsOneLineThenOneCount() {
        var w = RepeatedWarnings(every: 10)
        #expect(w.warn("too many in flight", peer: "10.0.0.2", now: 0) == .init(message: "too many in flight", peer: "10.0.0.2", more: 0))
        for t in 1 ... 35 { #expect(w.warn("too many in flight", peer: "10.0.0.2", now: Double(t) * 0.01) == nil) }
        #expect(w.due(now: 9.9).isEmpty)
        #expect(w.due(now: 10) == [.init(message: "too many in flight", peer: "10.0.0.2", more: 35)])
        // Reported once: nothing more is due until it repeats again.
        #expect(w.due(now: 25).isEmpty)
    }

    @Test func anotherPeerOrMessageIsAnotherKind() {
        var w = RepeatedWarnings(every: 10)
        #expect(w.warn("refused", peer: "a", now: 0) != nil)
        #expect(w.warn("refused", peer: "b", now: 0) != nil)
        #expect(w.warn("other", peer: "a", now: 0) != nil)
        #expect(w.warn("refused", peer: nil, now: 0) != nil)
        #expect(w.warn("refused", peer: "a", now: 1) == nil)
    }

    @Test func aLineAfterItsPeriodCarriesTheCountNotYetReported() {
        var w = RepeatedWarnings(every: 10)
        _ = w.warn("m", peer: nil, now: 0)
        #expect(w.warn("m", peer: nil, now: 5) == nil)
        #expect(w.warn("m", peer: nil, now: 12) == .init(message: "m", peer: nil, more: 1))
        #expect(w.due(now: 30).isEmpty)
        // Quiet for a minute: forgotten, and logged afresh.
        #expect(w.due(now: 80).isEmpty)
        #expect(w.warn("m", peer: nil, now: 81) == .init(message: "m", peer: nil, more: 0))
    }
}
