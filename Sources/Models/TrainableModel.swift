import Tensors

/// A model together with the data it trains on, as the worker and coordinator see it.
///
/// All parameters live in one flat `[Float]` described by ``layout``; a worker computes the mean
/// loss gradient of a micro-batch (a list of example indices) into a flat gradient buffer of the
/// same layout. Implementations must be deterministic: the same parameters and examples give the
/// same gradient on every worker, so a micro-batch can be recomputed elsewhere after a failure.
public protocol TrainableModel: Sendable {
    var layout: ParameterLayout { get }
    /// Number of examples in the training set; example indices are `0 ..< trainingExamples`.
    var trainingExamples: Int { get }
    /// Parameters before the first step.
    func initialParameters(seed: UInt64) -> [Float]
    /// Writes the mean gradient over `examples` into `gradient` (overwriting it) and returns the
    /// sum of the per-example losses. Randomness (augmentation, masking) is keyed by
    /// (seed, `epoch`, example), never by which worker computes it.
    func lossAndGradient(parameters: UnsafeBufferPointer<Float>, examples: [Int], epoch: Int,
                         gradient: UnsafeMutableBufferPointer<Float>) throws -> Double
    /// Extra records a checkpoint must carry to use the model without its training data
    /// (feature normalisation statistics, say).
    var checkpointRecords: [(name: String, values: [Float])] { get }
    /// Validation sets the model can be scored on, by name, with their sizes.
    var evaluationSets: [String: Int] { get }
    /// Error counts of the model at `parameters` on `examples` of the validation set `set`.
    func evaluate(parameters: UnsafeBufferPointer<Float>, set: String, examples: [Int]) throws -> EvaluationCounts
    /// Relative cost of each training example (its audio length, say), or nil when they cost the
    /// same: the data order groups examples of similar cost into a step.
    var exampleCosts: [Int]? { get }
    /// Identifies the data the model reads from files ("" when it makes its data from the
    /// configuration): coordinator and workers must agree on it.
    var dataFingerprint: String { get }
    /// Identifies the training data's content alone (validation sets do not change the maths of
    /// a step); part of a checkpoint's fingerprint.
    var trainingDataFingerprint: String { get }
    /// The inputs of prunable linear maps whose second moments the model can measure (empty when
    /// it cannot); see ``InputMomentRecorder``.
    var statisticSites: [StatisticSite] { get }
    /// ``lossAndGradient(parameters:examples:epoch:gradient:)`` that also records, into `moments`,
    /// the inputs of the sites it asks for.
    func lossAndGradient(parameters: UnsafeBufferPointer<Float>, examples: [Int], epoch: Int,
                         gradient: UnsafeMutableBufferPointer<Float>, moments: inout InputMomentRecorder) throws -> Double
}

extension TrainableModel {
    public var statisticSites: [StatisticSite] { [] }
    public func lossAndGradient(parameters: UnsafeBufferPointer<Float>, examples: [Int], epoch: Int,
                                gradient: UnsafeMutableBufferPointer<Float>, moments: inout InputMomentRecorder) throws -> Double {
        guard moments.isEmpty else { throw ModelError.noStatistics(moments.sites.map(\.name)) }
        return try lossAndGradient(parameters: parameters, examples: examples, epoch: epoch, gradient: gradient)
    }
    public var exampleCosts: [Int]? { nil }
    public var dataFingerprint: String { "" }
    public var trainingDataFingerprint: String { dataFingerprint }
}

/// Which model to build, composed into the run configuration.
public struct ModelSettings: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        /// A two-layer perceptron on the built-in synthetic classification task.
        case mlp
        /// A model whose gradient costs nothing to compute (`parameters` values, all prunable):
        /// for measuring the coordinator and the wire, not for learning anything.
        case loadtest
        /// The speech model: convolutional subsampling, (bi)LSTM layers, linear output, CTC
        /// (`acoustic` gives its sizes); trains on `data.kind: speech`.
        case ctc
        /// The RNN transducer: the ctc model's encoder (`acoustic`, with `bidirectional: false`
        /// to stream), a prediction network and a joint network (`rnnt`), trained with the
        /// RNN-T loss; trains on `data.kind: speech`.
        case rnnt
    }
    public var kind: Kind = .mlp
    public var inputDim = 32
    public var hiddenDim = 64
    public var classes = 8
    /// `loadtest` only: number of parameters.
    public var parameters = 1 << 20
    /// `ctc` and `rnnt`: the acoustic model's (the transducer's encoder's) shape.
    public var acoustic = AcousticSettings()
    /// `rnnt` only: the prediction and joint networks.
    public var rnnt = TransducerSettings()
    /// `ctc`, `rnnt`: probability of dropping each unit of every encoder LSTM layer's output
    /// while training (``EncoderDropout``); 0: none.
    public var dropout = 0.0
    public init() {}
}

/// The training data, composed into the run configuration.
public struct DataSettings: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        /// Gaussian clusters generated from the seed: any worker can make any example.
        case synthetic
        /// Prepared speech shards (`csptrain data prepare`).
        case speech
    }
    public var kind: Kind = .synthetic
    public var examples = 16384
    /// Standard deviation of the noise around each class centre (centres are ~N(0, 1) per axis).
    public var noise = 1.5
    /// `speech`: shard-set folders for training, validation and channel-degraded validation
    /// (held-out voices, scored as `valid` and `valid_channel`), and validation by training
    /// voices (`valid_seen`; empty: none).
    public var train = ""
    public var valid = ""
    public var validChannel = ""
    public var validSeen = ""
    public init() {}
}

/// Gradients for free: every value 1e-3, loss 1 per example. Two tensors (a 2-D weight holding
/// almost everything and a small bias) so chunking across tensors is exercised too.
public struct LoadTestModel: TrainableModel {
    public let layout: ParameterLayout
    public let trainingExamples: Int

    public init(parameters: Int, examples: Int) {
        let bias = min(1024, max(1, parameters / 64))
        layout = ParameterLayout([("weight", [parameters - bias], true), ("bias", [bias], false)])
        trainingExamples = examples
    }

    public func initialParameters(seed: UInt64) -> [Float] {
        [Float](repeating: 0.01, count: layout.totalCount)
    }

    public func lossAndGradient(parameters: UnsafeBufferPointer<Float>, examples: [Int], epoch: Int,
                                gradient: UnsafeMutableBufferPointer<Float>) throws -> Double {
        gradient.update(repeating: 1e-3)
        return Double(examples.count)
    }
}

extension TrainableModel {
    public var checkpointRecords: [(name: String, values: [Float])] { [] }
    public var evaluationSets: [String: Int] { [:] }
    public func evaluate(parameters: UnsafeBufferPointer<Float>, set: String, examples: [Int]) throws -> EvaluationCounts {
        throw ModelError.noEvaluation(set)
    }
}
