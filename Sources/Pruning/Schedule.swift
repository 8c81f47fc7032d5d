import Foundation

/// How the target sparsity moves over the run, and at which steps masks are recomputed.
///
/// - `one-shot`: sparsity 0 before `startStep`, `target` from it on; the mask is chosen once, at
///   `startStep`.
/// - `cubic` (Zhu & Gupta, 2017): from `initial` at t0 = `startStep` to `target` at t0 + nΔt =
///   `endStep`, the mask recomputed every Δt = `interval` steps:
///       s_t = s_f + (s_i − s_f) · (1 − (t − t0)/(nΔt))³,
///   held between updates (s_t is the value at the last update step) and equal to s_f after the
///   ramp. Pruning fast at first, when redundant weights are plenty, and slowly towards the end.
public struct SparsitySchedule: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        case oneShot = "one-shot"
        case cubic
    }
    public var kind: Kind = .cubic
    /// s_i: sparsity at the first update.
    public var initial = 0.0
    /// s_f: the final sparsity.
    public var target = 0.8
    /// t0: the first update step.
    public var startStep = 0
    /// t0 + nΔt: the step the ramp reaches the target (cubic).
    public var endStep = 1000
    /// Δt: steps between mask updates (cubic).
    public var interval = 100
    /// Sizes the cubic ramp stops at on its way (`pruning.snapshots`): at each, the mask is set to
    /// exactly that sparsity, held for `snapshotSteps` steps, and the state after the hold is
    /// kept as a snapshot checkpoint; then the ramp goes on (see ``Hold``).
    public var snapshots: [Double] = []
    /// `pruning.snapshot_steps`: the steps each snapshot size is held with its mask fixed.
    public var snapshotSteps = 100

    public init() {}

    /// The steps at which masks are recomputed, in order (the last is the step the target holds from).
    public var updateSteps: [Int] {
        var steps = rampUpdateSteps.filter { r in !holds.contains { $0.rampStep == r } }.map(runStep(ofRamp:))
        steps += holds.map(\.start)
        return steps.sorted()
    }

    public func isUpdateStep(_ step: Int) -> Bool {
        let (ramp, hold) = position(step)
        if let hold { return step == hold.start }
        return isRampUpdate(ramp) && !holds.contains { $0.rampStep == ramp }
    }

    /// s_t: the sparsity in force at `step` (0 before the first update).
    public func sparsity(atStep step: Int) -> Double {
        let (ramp, hold) = position(step)
        if let hold { return hold.size }
        // A size held on the way stays in force until the ramp passes it.
        let passed = holds.last { $0.rampStep < ramp }?.size ?? 0
        return max(passed, rampSparsity(ramp))
    }

    // MARK: Snapshots

    /// A size the ramp stops at: the update at run step `start` sets the mask to exactly `size`
    /// (at the ramp's step `rampStep`, the first where the cubic reaches it); the mask then stays
    /// for `steps` steps, so the snapshot is the state once `start + steps` steps are done. The
    /// run is `steps − 1` steps longer per hold than the ramp without them.
    public struct Hold: Sendable, Equatable {
        public let size: Double
        public let rampStep: Int
        public let start: Int
        public let steps: Int
        /// Steps done when the snapshot is taken.
        public var snapshotStep: Int { start + steps }
    }

    /// The holds, in order; empty without snapshots or for one-shot schedules.
    public var holds: [Hold] {
        guard kind == .cubic, snapshotSteps >= 1 else { return [] }
        var out: [Hold] = []
        for size in Set(snapshots).sorted() where size <= target + 1e-12 {
            var ramp = rampStep(reaching: size)
            if let last = out.last, ramp <= last.rampStep { ramp = last.rampStep + 1 }
            let extra = out.count * (snapshotSteps - 1)
            out.append(Hold(size: size, rampStep: ramp, start: ramp + extra, steps: snapshotSteps))
        }
        return out
    }

    /// True at the step a hold sets its size: the update there is not deferred for input
    /// statistics still being gathered (the snapshot must have exactly that size).
    public func startsHold(_ step: Int) -> Bool { holds.contains { $0.start == step } }

    /// Steps the holds add to the ramp: the ramp without snapshots ends at `endStep`, with them at
    /// `endStep + extraSteps` (holds at the target included).
    public var extraSteps: Int { holds.count * max(0, snapshotSteps - 1) }

    /// The first ramp step whose cubic sparsity is at least `size`.
    func rampStep(reaching size: Double) -> Int {
        guard size > initial, target > initial, endStep > startStep else { return startStep }
        let x = 1 - Foundation.cbrt(max(0, (target - size) / (target - initial)))
        var step = startStep + Int((x * Double(endStep - startStep)).rounded(.down))
        while step < endStep, cubic(step) < size - 1e-12 { step += 1 }
        return step
    }

    /// The ramp's step for run step `step`, and the hold it falls in.
    func position(_ step: Int) -> (ramp: Int, hold: Hold?) {
        var extra = 0
        for h in holds {
            if step < h.start { break }
            if step < h.snapshotStep { return (h.rampStep, h) }
            extra += h.steps - 1
        }
        return (step - extra, nil)
    }

    func runStep(ofRamp ramp: Int) -> Int {
        ramp + holds.filter { $0.rampStep < ramp }.count * max(0, snapshotSteps - 1)
    }

    // MARK: The ramp without holds

    var rampUpdateSteps: [Int] {
        switch kind {
        case .oneShot: return [startStep]
        case .cubic:
            guard endStep > startStep, interval > 0 else { return [startStep] }
            var steps = Array(stride(from: startStep, to: endStep, by: interval))
            steps.append(endStep)
            return steps
        }
    }

    func isRampUpdate(_ step: Int) -> Bool {
        switch kind {
        case .oneShot: return step == startStep
        case .cubic:
            guard step >= startStep, step <= endStep else { return false }
            return step == endStep || interval <= 0 || (step - startStep) % interval == 0
        }
    }

    func rampSparsity(_ step: Int) -> Double {
        guard step >= startStep else { return 0 }
        switch kind {
        case .oneShot: return target
        case .cubic:
            guard endStep > startStep, step < endStep else { return target }
            return cubic(interval > 0 ? startStep + (step - startStep) / interval * interval : step)
        }
    }

    /// The cubic at ramp step `step` (no holding between updates).
    func cubic(_ step: Int) -> Double {
        guard endStep > startStep else { return target }
        let progress = min(1, max(0, Double(step - startStep) / Double(endStep - startStep)))
        let remaining = 1 - progress
        return target + (initial - target) * remaining * remaining * remaining
    }

    /// Why these settings cannot work, or nil.
    public var problem: String? {
        if !(0 ... 1).contains(initial) || !(0 ... 1).contains(target) { return "initial and target sparsity must be in [0, 1]" }
        if startStep < 0 { return "start_step must be at least 0" }
        if kind == .cubic {
            if endStep < startStep { return "end_step (\(endStep)) is before start_step (\(startStep))" }
            if interval <= 0 { return "interval must be at least 1" }
        }
        if !snapshots.isEmpty {
            if kind != .cubic { return "snapshots need the cubic schedule (a one-shot schedule has one size)" }
            if let bad = snapshots.first(where: { !(0 ..< 1).contains($0) || $0 > target + 1e-12 }) {
                return "snapshot \(bad) is not a sparsity in [0, target = \(target)]"
            }
            if snapshotSteps < 1 { return "snapshot_steps must be at least 1" }
        }
        return nil
    }
}
