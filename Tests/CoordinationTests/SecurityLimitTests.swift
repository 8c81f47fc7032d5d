import Foundation
import Testing
@testable import Coordination

struct JoinRateLimitTests {
    @Test func attemptsPerHostPerMinuteAreCountedApart() {
        var limit = JoinRateLimit(perMinute: 3)
        for _ in 0 ..< 3 {
            let admitted = limit.admit(host: "10.0.0.7", now: 10)
            #expect(admitted)
        }
        let fourth = limit.admit(host: "10.0.0.7", now: 20)
        #expect(!fourth)
        #expect(limit.retryAfter(host: "10.0.0.7", now: 20) == 50)
        // Another host is not affected; the window ends a minute after its first attempt.
        let otherHost = limit.admit(host: "10.0.0.8", now: 20), aMinuteLater = limit.admit(host: "10.0.0.7", now: 70)
        #expect(otherHost && aMinuteLater)
    }

    @Test func trackedHostsAreBoundedAndUnlimitedMeansUnlimited() {
        var limit = JoinRateLimit(perMinute: 1, maxHosts: 4)
        var admitted = 0
        for i in 0 ..< 100 where limit.admit(host: "h\(i)", now: Double(i) * 0.01) { admitted += 1 }
        #expect(admitted == 100, "each new host has its own first attempt, with at most 4 remembered")
        var open = JoinRateLimit(perMinute: nil)
        admitted = 0
        for _ in 0 ..< 10_000 where open.admit(host: "x", now: 0) { admitted += 1 }
        #expect(admitted == 10_000)
    }

    @Test func hostOfPeer() {
        #expect(JoinRateLimit.host(ofPeer: "10.0.0.7:41234") == "10.0.0.7")
        #expect(JoinRateLimit.host(ofPeer: "[fd00::7]:41234") == "[fd00::7]")
        #expect(JoinRateLimit.host(ofPeer: "peer-3") == "peer-3")
    }
}

struct ConnectionWatchTests {
    @Test func silentConnectionsWithoutAMemberAreClosedOnce() {
        var watch = ConnectionWatch(silentSeconds: 10)
        watch.opened(1, now: 0)  // silent stranger
        watch.opened(2, now: 0)  // a member's connection
        watch.opened(3, now: 0)  // speaks at t = 8
        watch.heard(3, now: 8)
        #expect(watch.silent(now: 9, memberPipes: [2]).isEmpty)
        #expect(watch.silent(now: 10.5, memberPipes: [2]) == [1])
        #expect(watch.silent(now: 10.6, memberPipes: [2]).isEmpty)
        #expect(watch.silent(now: 18.5, memberPipes: [2]) == [3])
        watch.closed(2)
        #expect(watch.openCount == 0 && watch.closedSilent == 2)
    }
}
