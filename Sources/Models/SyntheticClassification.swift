import Tensors

/// A built-in classification data set: `classes` Gaussian clusters in `inputDim` dimensions.
///
/// Examples are computed from (seed, index) on demand, so every process holds the whole data
/// set without storing it, and the coordinator can hand any example to any worker.
public struct SyntheticClassification: Sendable {
    public let inputDim: Int
    public let classes: Int
    public let examples: Int
    public let noise: Float
    public let seed: UInt64
    /// Class centres, (classes, inputDim) row-major.
    private let centres: [Float]

    public init(inputDim: Int, classes: Int, examples: Int, noise: Float, seed: UInt64) {
        self.inputDim = inputDim
        self.classes = classes
        self.examples = examples
        self.noise = noise
        self.seed = seed
        var rng = SeededRandom(seed, Purpose.centres)
        centres = (0 ..< classes * inputDim).map { _ in rng.nextGaussian() }
    }

    public func label(of example: Int) -> Int {
        Int(SeededRandom.key([seed, Purpose.label, UInt64(example)]) % UInt64(classes))
    }

    /// Writes example `index`'s features into `out` (inputDim values).
    public func features(of example: Int, into out: UnsafeMutableBufferPointer<Float>) {
        let c = label(of: example)
        var rng = SeededRandom(seed, Purpose.features, UInt64(example))
        for d in 0 ..< inputDim {
            out[d] = centres[c * inputDim + d] + noise * rng.nextGaussian()
        }
    }

    private enum Purpose {
        static let centres: UInt64 = 1
        static let label: UInt64 = 2
        static let features: UInt64 = 3
    }
}
