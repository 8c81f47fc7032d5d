
import CKernels
import Tensors

#if canImport(Glibc)
import Glibc
#endif

/// Optimizer settings, composed into the run configuration.
public struct OptimizerSettings: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        /// SGD with (optionally Nesterov) momentum; weight decay is added to the gradient (L2).
        case sgd
        /// Adam (Kingma & Ba, 2015); weight decay is added to the gradient (L2).
        case adam
        /// AdamW (Loshchilov & Hutter, 2019): weight decay decoupled from the adaptive scaling.
        case adamw
    }
    public var kind: Kind = .adamw
    public var learningRate = 0.01
    public var momentum = 0.9
    public var nesterov = false
    public var beta1 = 0.9
    public var beta2 = 0.999
    public var epsilon = 1e-8
    public var weightDecay = 0.0
    /// Clip the global gradient norm to this value; 0 turns clipping off.
    public var clipNorm = 1.0
    public var schedule = LearningRateSchedule()
    public init() {}
}

/// Linear warm-up, then constant or cosine decay to `minFactor` × the base rate.
public struct LearningRateSchedule: Sendable, Equatable {
    public enum Decay: String, Sendable, CaseIterable { case constant, cosine }
    public var decay: Decay = .constant
    public var warmupSteps = 0
    /// Cosine decay: the factor reached at the last step.
    public var minFactor = 0.1
    public init() {}

    /// The factor applied to the base learning rate at `step` (0-based) of `totalSteps`.
    public func factor(step: Int, totalSteps: Int) -> Double {
        if step < warmupSteps { return Double(step + 1) / Double(warmupSteps) }
        switch decay {
        case .constant:
            return 1
        case .cosine:
            let span = max(1, totalSteps - warmupSteps)
            let progress = min(1, Double(step - warmupSteps) / Double(span))
            return minFactor + (1 - minFactor) * 0.5 * (1 + cos(Double.pi * progress))
        }
    }
}

/// Applies one optimizer step to a flat parameter buffer. Holds the per-parameter state.
public struct Optimizer: Sendable {
    public let settings: OptimizerSettings
    /// SGD: velocity. Adam/AdamW: first moment.
    public private(set) var m: [Float]
    /// Adam/AdamW: second moment (empty for SGD).
    public private(set) var v: [Float]
    /// Steps taken (for Adam's bias correction).
    public private(set) var t: Int = 0

    public init(settings: OptimizerSettings, parameterCount: Int) {
        self.settings = settings
        m = [Float](repeating: 0, count: parameterCount)
        v = settings.kind == .sgd ? [] : [Float](repeating: 0, count: parameterCount)
    }

    /// Restores state saved with ``slots``.
    public init(settings: OptimizerSettings, t: Int, m: [Float], v: [Float]) {
        self.settings = settings
        self.t = t
        self.m = m
        self.v = v
    }

    /// Named state buffers, for checkpoints.
    public var slots: [(name: String, values: [Float])] {
        settings.kind == .sgd ? [("m", m)] : [("m", m), ("v", v)]
    }

    /// params ← params − lr · update(grad). `learningRate` is the scheduled rate for this step.
    public mutating func apply(gradient: UnsafeBufferPointer<Float>, to params: UnsafeMutableBufferPointer<Float>,
                               learningRate: Double) {
        apply(gradient: gradient, to: params, learningRate: learningRate, blocks: [0 ..< params.count])
    }

    /// The same, block by block, concurrently: every value's update depends only on its own
    /// state, so the result is the same bits as in one pass.
    public mutating func apply(gradient: UnsafeBufferPointer<Float>, to params: UnsafeMutableBufferPointer<Float>,
                               learningRate: Double, blocks: Blocks) {
        apply(gradient: gradient, to: params, learningRate: learningRate, blocks: blocks.ranges)
    }

    private mutating func apply(gradient: UnsafeBufferPointer<Float>, to params: UnsafeMutableBufferPointer<Float>,
                                learningRate: Double, blocks: [Range<Int>]) {
        precondition(gradient.count == params.count && params.count == m.count)
        t += 1
        guard !params.isEmpty else { return }
        let lr = Float(learningRate), wd = Float(settings.weightDecay)
        let p = params.baseAddress!, g = gradient.baseAddress!
        switch settings.kind {
        case .sgd:
            let mu = Float(settings.momentum), nesterov = settings.nesterov
            m.withUnsafeMutableBufferPointer { vel in
                let velocity = vel.baseAddress!
                Parallel.forEach(blocks.count) { b in
                    for i in blocks[b] {
                        let gi = g[i] + wd * p[i]
                        velocity[i] = mu * velocity[i] + gi
                        p[i] -= lr * (nesterov ? gi + mu * velocity[i] : velocity[i])
                    }
                }
            }
        case .adam, .adamw:
            let b1 = Float(settings.beta1), b2 = Float(settings.beta2), eps = Float(settings.epsilon)
            let c1 = 1 - Float(pow(settings.beta1, Double(t))), c2 = 1 - Float(pow(settings.beta2, Double(t)))
            let decoupled: Int32 = settings.kind == .adamw ? 1 : 0
            // The definition, vectorised (csp_adam computes exactly this, element by element):
            //   g = grad + wd·p (Adam) | grad (AdamW);  m = b1·m + (1−b1)·g;  v = b2·v + (1−b2)·g²
            //   p −= lr · ((m / c1) / (√(v / c2) + eps) + (AdamW: wd·p))
            m.withUnsafeMutableBufferPointer { m1 in
                v.withUnsafeMutableBufferPointer { m2 in
                    let first = m1.baseAddress!, second = m2.baseAddress!
                    Parallel.forEach(blocks.count) { b in
                        let r = blocks[b]
                        csp_adam(p + r.lowerBound, g + r.lowerBound, first + r.lowerBound, second + r.lowerBound, r.count,
                                 lr, b1, b2, eps, c1, c2, wd, decoupled)
                    }
                }
            }
        }
    }
}


