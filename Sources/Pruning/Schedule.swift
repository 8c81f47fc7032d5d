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

    public init() {}

    /// The steps at which masks are recomputed, in order (the last is the step the target holds from).
    public var updateSteps: [Int] {
        switch kind {
        case .oneShot: return [startStep]
        case .cubic:
            guard endStep > startStep, interval > 0 else { return [startStep] }
            var steps = Array(stride(from: startStep, to: endStep, by: interval))
            steps.append(endStep)
            return steps
        }
    }

    public func isUpdateStep(_ step: Int) -> Bool {
        switch kind {
        case .oneShot: return step == startStep
        case .cubic:
            guard step >= startStep, step <= endStep else { return false }
            return step == endStep || interval <= 0 || (step - startStep) % interval == 0
        }
    }

    /// s_t: the sparsity in force at `step` (0 before the first update).
    public func sparsity(atStep step: Int) -> Double {
        guard step >= startStep else { return 0 }
        switch kind {
        case .oneShot: return target
        case .cubic:
            guard endStep > startStep, step < endStep else { return target }
            let last = interval > 0 ? startStep + (step - startStep) / interval * interval : step
            let progress = Double(last - startStep) / Double(endStep - startStep)
            let remaining = 1 - progress
            return target + (initial - target) * remaining * remaining * remaining
        }
    }

    /// Why these settings cannot work, or nil.
    public var problem: String? {
        if !(0 ... 1).contains(initial) || !(0 ... 1).contains(target) { return "initial and target sparsity must be in [0, 1]" }
        if startStep < 0 { return "start_step must be at least 0" }
        if kind == .cubic {
            if endStep < startStep { return "end_step (\(endStep)) is before start_step (\(startStep))" }
            if interval <= 0 { return "interval must be at least 1" }
        }
        return nil
    }
}
