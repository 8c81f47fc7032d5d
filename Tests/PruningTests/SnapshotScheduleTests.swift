import Foundation
import Testing
@testable import Pruning

/// `pruning.snapshots`: the cubic ramp stops at each size, holds it with the mask fixed, and the
/// state after the hold is kept; the ramp then goes on where it stopped.
struct SnapshotScheduleTests {
    static func schedule(snapshots: [Double], hold: Int = 20, target: Double = 0.9) -> SparsitySchedule {
        var s = SparsitySchedule()
        s.kind = .cubic
        s.initial = 0
        s.target = target
        s.startStep = 0
        s.endStep = 100
        s.interval = 10
        s.snapshots = snapshots
        s.snapshotSteps = hold
        return s
    }

    /// Worked by hand: s(t) = 0.9·(1 − (1 − t/100)³) ≥ 0.5 needs (1 − t/100)³ ≤ 4/9 = 0.444:
    /// 0.76³ = 0.439 (t = 24) but 0.77³ = 0.457; ≥ 0.8 needs ≤ 1/9 = 0.111: 0.48³ = 0.1106 (t = 52)
    /// but 0.49³ = 0.1176.
    @Test func holdsStartWhereTheCubicFirstReachesEachSize() {
        let s = Self.schedule(snapshots: [0.8, 0.5])
        #expect(s.holds.map(\.size) == [0.5, 0.8])
        #expect(s.holds.map(\.rampStep) == [24, 52])
        // The second hold starts 19 steps later than its ramp step: the first took 20 run steps for one ramp step.
        #expect(s.holds.map(\.start) == [24, 71])
        #expect(s.holds.map(\.snapshotStep) == [44, 91])
        #expect(s.extraSteps == 38)
    }

    @Test func eachHoldHasExactlyItsSizeAndOneUpdate() {
        let s = Self.schedule(snapshots: [0.5, 0.8])
        for hold in s.holds {
            for step in hold.start ..< hold.snapshotStep {
                #expect(s.sparsity(atStep: step) == hold.size, "step \(step)")
                #expect(s.isUpdateStep(step) == (step == hold.start), "step \(step)")
            }
        }
    }

    /// Outside the holds the run follows the ramp shifted by the holds' extra steps, never below
    /// a size already held; the sparsity never falls, and the target is reached once the ramp
    /// (and its holds) is over.
    @Test func outsideTheHoldsTheRampGoesOnShifted() {
        let plain = Self.schedule(snapshots: [])
        let s = Self.schedule(snapshots: [0.5, 0.8])
        var previous = 0.0
        for step in 0 ... 200 {
            let value = s.sparsity(atStep: step)
            #expect(value >= previous, "step \(step): \(value) after \(previous)")
            previous = value
            let (ramp, hold) = s.position(step)
            guard hold == nil else { continue }
            let passed = s.holds.filter { $0.rampStep < ramp }.map(\.size).max() ?? 0
            #expect(value == max(passed, plain.sparsity(atStep: ramp)), "step \(step)")
            #expect(s.isUpdateStep(step) == (plain.isUpdateStep(ramp) && !s.holds.contains { $0.rampStep == ramp }), "step \(step)")
        }
        #expect(s.sparsity(atStep: 100 + s.extraSteps) == 0.9)
        #expect(s.sparsity(atStep: 99 + s.extraSteps) < 0.9)
        #expect(s.updateSteps == (0 ... 200).filter(s.isUpdateStep))
    }

    @Test func aSnapshotAtTheTargetHoldsAtTheEndOfTheRamp() {
        let s = Self.schedule(snapshots: [0.9], hold: 5)
        #expect(s.holds.map(\.rampStep) == [100] && s.holds.map(\.snapshotStep) == [105])
        #expect(s.sparsity(atStep: 100) == 0.9 && s.isUpdateStep(100) && !s.isUpdateStep(101))
    }

    @Test func withoutSnapshotsNothingChanges() {
        let s = Self.schedule(snapshots: [])
        #expect(s.holds.isEmpty && s.extraSteps == 0)
        #expect(s.updateSteps == Array(stride(from: 0, through: 100, by: 10)))
        var oneShot = s
        oneShot.kind = .oneShot
        oneShot.snapshots = [0.5]
        #expect(oneShot.holds.isEmpty)
        #expect(oneShot.problem?.contains("cubic") == true)
    }

    @Test func badSnapshotsAreNamed() {
        #expect(Self.schedule(snapshots: [0.95]).problem?.contains("snapshot 0.95") == true)
        #expect(Self.schedule(snapshots: [-0.1]).problem?.contains("snapshot -0.1") == true)
        #expect(Self.schedule(snapshots: [0.5, 0.9]).problem == nil)
    }
}
