import Foundation
import Testing
@testable import Models
@testable import Tensors

/// Dropout on the speech encoder's LSTM outputs: keyed masks, the hand-written backward pass
/// through them, and none of it outside training.
struct EncoderDropoutTests {
    func tinyCTC() -> AcousticModel {
        var s = AcousticSettings()
        s.features = 4
        s.convChannels = 3
        s.lstmHidden = 3
        s.lstmLayers = 2
        s.classes = 4
        return AcousticModel(settings: s)
    }

    func tinyRNNT() -> TransducerModel {
        var s = AcousticSettings()
        s.features = 4
        s.convChannels = 3
        s.convLayers = 1
        s.lstmHidden = 3
        s.lstmLayers = 2
        s.classes = 4
        var r = TransducerSettings()
        r.predictorEmbedding = 3
        r.predictorHidden = 3
        r.jointDim = 4
        return TransducerModel(settings: s, transducer: r)
    }

    static let keys = [EncoderDropout.key(seed: 3, epoch: 1, example: 10), EncoderDropout.key(seed: 3, epoch: 1, example: 11)]

    /// Worst relative error between `gradient` and central differences of `loss`, each parameter
    /// at the first of several step sizes that agrees (ReLU kinks and dropped units make one step
    /// size wrong for a few parameters; a wrong gradient agrees at none).
    func worstError(_ p: [Float], _ gradient: [Float], tolerance: Double, loss: ([Float]) -> Double) -> Double {
        var worst = 0.0
        for i in p.indices {
            var best = Double.infinity
            for eps in [Float(1e-2), 3e-3, 1e-3, 3e-4] where best > tolerance {
                var a = p, b = p
                a[i] += eps
                b[i] -= eps
                let numeric = (loss(a) - loss(b)) / Double(2 * eps)
                best = min(best, abs(numeric - Double(gradient[i])) / max(1e-2, abs(numeric) + abs(Double(gradient[i]))))
            }
            worst = max(worst, best)
        }
        return worst
    }

    func ctcLoss(_ model: AcousticModel, _ q: [Float], _ features: [[Float]], _ labels: [[Int]],
                 dropout: EncoderDropout?) -> (loss: Double, gradient: [Float]) {
        var g = [Float](repeating: 0, count: q.count)
        let report = q.withUnsafeBufferPointer { qb in
            g.withUnsafeMutableBufferPointer { model.lossAndGradient(parameters: qb, features: features, labels: labels, gradient: $0, dropout: dropout) }
        }
        return (report.lossSum / Double(features.count), g)
    }

    func rnntLoss(_ model: TransducerModel, _ q: [Float], _ features: [[Float]], _ labels: [[Int]],
                  dropout: EncoderDropout?) -> (loss: Double, gradient: [Float]) {
        var g = [Float](repeating: 0, count: q.count)
        let report = q.withUnsafeBufferPointer { qb in
            g.withUnsafeMutableBufferPointer { model.lossAndGradient(parameters: qb, features: features, labels: labels, gradient: $0, dropout: dropout) }
        }
        return (report.lossSum / Double(features.count), g)
    }

    @Test func ctcGradientWithDropoutMatchesFiniteDifferences() {
        let model = tinyCTC()
        let features = [randomValues(17 * 4, seed: 31), randomValues(12 * 4, seed: 32)]
        let labels = [[1, 2], [3]]
        let p = model.initialParameters(seed: 7).map { $0 * 2 }
        let dropout = EncoderDropout(probability: 0.3, keys: Self.keys)
        let (loss, g) = ctcLoss(model, p, features, labels, dropout: dropout)
        // The masks are on: the loss is not the undropped one.
        #expect(loss != ctcLoss(model, p, features, labels, dropout: nil).loss)
        let worst = worstError(p, g, tolerance: 2e-2) { ctcLoss(model, $0, features, labels, dropout: dropout).loss }
        #expect(worst < 2e-2, "worst relative error \(worst) over \(p.count) parameters")
    }

    @Test func rnntGradientWithDropoutMatchesFiniteDifferences() {
        let model = tinyRNNT()
        let features = [randomValues(9 * 4, seed: 41), randomValues(6 * 4, seed: 42)]
        let labels = [[1, 2, 2], [3]]
        let p = model.initialParameters(seed: 9).map { $0 * 2 }
        let dropout = EncoderDropout(probability: 0.3, keys: Self.keys)
        let (loss, g) = rnntLoss(model, p, features, labels, dropout: dropout)
        #expect(loss != rnntLoss(model, p, features, labels, dropout: nil).loss)
        let worst = worstError(p, g, tolerance: 1e-2) { rnntLoss(model, $0, features, labels, dropout: dropout).loss }
        #expect(worst < 1e-2, "worst relative error \(worst) over \(p.count) parameters")
    }

    /// p = 0 is today's maths exactly: the same loss and gradient bit for bit.
    @Test func zeroProbabilityChangesNothing() {
        let features = [randomValues(17 * 4, seed: 51), randomValues(12 * 4, seed: 52)]
        let labels = [[1, 2], [3]]
        let off = EncoderDropout(probability: 0, keys: Self.keys)
        let ctc = tinyCTC(), pc = ctc.initialParameters(seed: 1)
        let (a, ga) = ctcLoss(ctc, pc, features, labels, dropout: nil)
        let (b, gb) = ctcLoss(ctc, pc, features, labels, dropout: off)
        #expect(a == b && ga == gb)
        let rnnt = tinyRNNT(), pr = rnnt.initialParameters(seed: 2)
        let (c, gc) = rnntLoss(rnnt, pr, features, labels, dropout: nil)
        let (d, gd) = rnntLoss(rnnt, pr, features, labels, dropout: off)
        #expect(c == d && gc == gd)
    }

    /// An utterance's masks depend on its key alone: computed alone or second in a batch beside a
    /// longer utterance, it gets the same masks and the same encoder output.
    @Test func masksOfAnUtteranceDoNotDependOnItsBatch() {
        let model = tinyCTC()
        let p = model.initialParameters(seed: 4)
        let a = randomValues(13 * 4, seed: 61), b = randomValues(21 * 4, seed: 62)
        let ka = EncoderDropout.key(seed: 9, epoch: 2, example: 5), kb = EncoderDropout.key(seed: 9, epoch: 2, example: 6)
        let alone = p.withUnsafeBufferPointer {
            model.encoder.forward(SequenceBatch(sequences: [a], channels: 4), parameters: $0, dropout: EncoderDropout(probability: 0.4, keys: [ka]))
        }
        let batched = p.withUnsafeBufferPointer {
            model.encoder.forward(SequenceBatch(sequences: [b, a], channels: 4), parameters: $0, dropout: EncoderDropout(probability: 0.4, keys: [kb, ka]))
        }
        #expect(alone.lstmMasks.count == 2 && batched.lstmMasks.count == 2)
        for n in 0 ..< 2 {
            let D = alone.output.channels, T = alone.output.lengths[0], B = batched.output.batch
            let mine = alone.lstmMasks[n]
            let theirs: [Float] = batched.lstmMasks[n]
            var inBatch: [Float] = []
            for t in 0 ..< T {
                let start: Int = (t * B + 1) * D
                inBatch += theirs[start ..< start + D]
            }
            #expect(mine == inBatch, "layer \(n)")
            #expect(mine.contains(0) && mine.contains { $0 != 0 }, "layer \(n) drops some units and keeps others")
        }
        for (u, v) in zip(alone.output.sequence(0), batched.output.sequence(1)) { #expect(abs(u - v) < 1e-6) }
        // Another example's key (or another epoch's) draws other masks.
        let other = EncoderDropout(probability: 0.4, keys: [EncoderDropout.key(seed: 9, epoch: 3, example: 5)])
        #expect(other.mask(layer: 0, steps: 5, lengths: [5], width: 6) != EncoderDropout(probability: 0.4, keys: [ka]).mask(layer: 0, steps: 5, lengths: [5], width: 6))
    }

    /// Over a large draw the dropped fraction is p (within 5 standard deviations), the kept units
    /// are scaled by 1/(1 − p), padding is zero, and the layers' masks differ.
    @Test(arguments: [Float(0.1), 0.5])
    func droppedFractionIsNearTheProbability(p: Float) {
        let keys = (0 ..< 8).map { EncoderDropout.key(seed: 1, epoch: 0, example: $0) }
        let lengths = [200, 150, 200, 90, 200, 200, 10, 200]
        let dropout = EncoderDropout(probability: p, keys: keys)
        let width = 64, steps = 200
        let mask = dropout.mask(layer: 1, steps: steps, lengths: lengths, width: width)
        var dropped = 0, kept = 0
        for t in 0 ..< steps {
            for b in 0 ..< keys.count {
                let row = mask[(t * keys.count + b) * width ..< (t * keys.count + b + 1) * width]
                if t >= lengths[b] { #expect(row.allSatisfy { $0 == 0 }); continue }
                for v in row {
                    if v == 0 { dropped += 1 } else { kept += 1; #expect(v == 1 / (1 - p)) }
                }
            }
        }
        let n = Double(dropped + kept), fraction = Double(dropped) / n
        let sigma = (Double(p) * Double(1 - p) / n).squareRoot()
        #expect(abs(fraction - Double(p)) < 5 * sigma, "dropped \(fraction) of \(Int(n)), p = \(p)")
        #expect(mask != dropout.mask(layer: 0, steps: steps, lengths: lengths, width: width))
    }

    /// Decoding reads the undropped network: the CTC loss of `logits` (what eval and transcribe
    /// decode) is the loss without dropout, and the transducer's encoding for decoding has no masks.
    @Test func decodingAppliesNoDropout() {
        let model = tinyCTC()
        let p = model.initialParameters(seed: 5)
        let features = [randomValues(17 * 4, seed: 71)], labels = [[1, 2]]
        let logits = p.withUnsafeBufferPointer { model.logits(parameters: $0, features: features) }[0]
        let decoded = logits.withUnsafeBufferPointer { CTC.loss(logits: $0, frames: logits.count / 4, classes: 4, labels: labels[0]).loss }
        #expect(decoded == ctcLoss(model, p, features, labels, dropout: nil).loss)
        #expect(decoded != ctcLoss(model, p, features, labels, dropout: EncoderDropout(probability: 0.5, keys: [Self.keys[0]])).loss)
        let rnnt = tinyRNNT(), pr = rnnt.initialParameters(seed: 6)
        let encoded = pr.withUnsafeBufferPointer { rnnt.encode(features, parameters: $0) }
        #expect(encoded.encoder.lstmMasks.isEmpty)
    }
}
