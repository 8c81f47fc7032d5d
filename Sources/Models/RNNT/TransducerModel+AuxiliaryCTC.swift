import Tensors

/// The auxiliary CTC loss (``TransducerSettings/ctcWeight``): a linear head on the transcriber's
/// output, trained by CTC beside the transducer's joint, as in Watanabe et al.'s joint
/// CTC/attention training and the hybrid transducer recipes after it. Inference never reads it,
/// and the export leaves it out.
extension TransducerModel {
    /// λ · Σ_b CTC_b over the utterances of the batch; adds λ/B · ∂CTC/∂(head) into `g` and the
    /// gradient with respect to the transcriber's output into `dtop` ((T', B, C), as `top`).
    ///
    /// An utterance whose labels do not fit its frames under CTC's rules (the transducer allows
    /// more labels than frames, CTC does not) adds nothing: its RNN-T loss alone trains it. A NaN
    /// (diverged weights) is returned as NaN, as the transducer's own loss is.
    func auxiliaryCTC(_ head: Linear, top: SequenceBatch, labels: [[Int]], parameters p: UnsafeBufferPointer<Float>,
                      gradient g: UnsafeMutableBufferPointer<Float>, into dtop: inout [Float]) -> Double {
        let B = top.batch, V = settings.classes, rows = top.steps * B
        let weight = transducer.ctcWeight
        let logits = head.forward(top.values, rows: rows, parameters: p)          // (T', B, V)
        var dlogits = [Float](repeating: 0, count: logits.count)
        var sum = 0.0
        var utterance = [Float]()
        for b in 0 ..< B {
            let T = top.lengths[b]
            guard T > 0 else { continue }
            utterance.removeAll(keepingCapacity: true)
            for t in 0 ..< T { utterance += logits[(t * B + b) * V ..< (t * B + b + 1) * V] }
            let result = utterance.withUnsafeBufferPointer { CTC.loss(logits: $0, frames: T, classes: V, labels: labels[b]) }
            if result.loss.isNaN { return .nan }
            guard result.loss.isFinite else { continue }
            sum += result.loss
            let scale = Float(weight / Double(B))
            for t in 0 ..< T {
                for k in 0 ..< V { dlogits[(t * B + b) * V + k] = scale * result.gradient[t * V + k] }
            }
        }
        let dx = head.backward(dlogits, input: top.values, rows: rows, parameters: p, gradient: g)
        for i in 0 ..< dtop.count { dtop[i] += dx[i] }
        return weight * sum
    }
}
