import Foundation
import Models
import Pruning
import Tensors

/// What the benchmarks of sensing through the layers' inputs share (StatisticsBenchmark,
/// SketchBenchmark): the reference speech model (2.9 M parameters) at its initial weights, with
/// the LSTM and the second convolution pruned as Configs/prune-speech.yaml prunes them, and
/// micro-batches of random features run through it on one BLAS thread.
struct ReferenceSpeechInputs {
    let model = AcousticModel(settings: AcousticSettings())
    let parameters: [Float]
    private var gradient: [Float]

    init(seed: UInt64) {
        VectorMath.setThreadCount(1)
        parameters = model.initialParameters(seed: seed)
        gradient = [Float](repeating: 0, count: model.layout.totalCount)
    }

    var layout: ParameterLayout { model.layout }

    /// Pruning settings for `method` over the pruned layers.
    func pruning(_ method: PruningSettings.Method, measuredBy op: PruningSettings.Operator = .gaussian) -> PruningSettings {
        var s = PruningSettings()
        s.exclude = ["conv.0.*", "output.*"]
        s.method = method
        s.measurementOperator = op
        return s
    }

    /// `utterances` utterances of `frames` random feature frames, each with 20 random labels.
    func randomBatch(utterances: Int, frames: Int, rng: inout SeededRandom) -> (features: [[Float]], labels: [[Int]]) {
        let features = (0 ..< utterances).map { _ in (0 ..< frames * model.settings.features).map { _ in rng.nextGaussian() } }
        let labels = (0 ..< utterances).map { _ in (0 ..< 20).map { _ in 1 + Int(rng.next() % 27) } }
        return (features, labels)
    }

    /// One micro-batch's forward and backward pass, recording into `moments`; its seconds.
    mutating func microBatch(_ batch: (features: [[Float]], labels: [[Int]]), moments: inout InputMomentRecorder) -> Double {
        let start = ContinuousClock.now
        parameters.withUnsafeBufferPointer { p in
            gradient.withUnsafeMutableBufferPointer { g in
                _ = model.lossAndGradient(parameters: p, features: batch.features, labels: batch.labels, gradient: g, moments: &moments)
            }
        }
        return (ContinuousClock.now - start).seconds
    }
}
