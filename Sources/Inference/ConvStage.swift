import CKernels

/// A stride-s convolution over time with ReLU (Conv1D's inference side), fed frames as they come.
///
/// Output t' reads input frames t'·s − p … t'·s − p + k − 1, so it can be computed once frame
/// t'·s − p + k − 1 has arrived; at the end of the input the missing frames are the zero
/// padding, as in training. Fed all at once with `final`, it computes what Conv1D computes.
struct ConvStage: Sendable {
    let weight: PackedMatrix   // (Cout, Cin·k), column ci·k + j as Conv1D's im2col
    let bias: [Float]          // (Cout)
    let inChannels: Int
    let outChannels: Int
    let kernel: Int
    let stride: Int
    let padding: Int

    func outputLength(_ t: Int) -> Int { t == 0 ? 0 : max(0, (t + 2 * padding - kernel) / stride + 1) }

    /// What a stream has received and not yet used.
    struct State: Sendable {
        var frames: [Float] = []   // (count, Cin) time-major, frames first ..< received
        var first = 0
        var received = 0
        var next = 0               // the next output frame
    }

    /// Takes `input` (n, Cin) time-major; returns the outputs that became computable, (m, Cout)
    /// time-major. `final`: the input ends here.
    func push(_ input: ArraySlice<Float>, state s: inout State, final: Bool, scratch: inout [Float]) -> [Float] {
        s.frames.append(contentsOf: input)
        s.received += input.count / inChannels
        let end: Int
        if final {
            end = outputLength(s.received)
        } else {
            let last = s.received - kernel + padding   // the newest output's first frame index · s bound
            end = last < 0 ? 0 : min(outputLength(s.received), last / stride + 1)
        }
        let m = end - s.next
        guard m > 0 else { return [] }
        let width = inChannels * kernel
        var rows = [Float](repeating: 0, count: m * width)    // (m, Cin·k): contiguous writes
        s.frames.withUnsafeBufferPointer { frames in rows.withUnsafeMutableBufferPointer { rows in
            for o in 0 ..< m {
                let t = s.next + o
                for j in 0 ..< kernel {
                    let source = t * stride + j - padding
                    guard source >= 0, source < s.received else { continue }
                    let src = frames.baseAddress! + (source - s.first) * inChannels
                    let dst = rows.baseAddress! + o * width + j
                    for ci in 0 ..< inChannels { dst[ci * kernel] = src[ci] }
                }
            }
        } }
        var cols = [Float](repeating: 0, count: width * m)    // (Cin·k, m)
        rows.withUnsafeBufferPointer { r in cols.withUnsafeMutableBufferPointer { csp_transpose(r.baseAddress!, m, width, $0.baseAddress!) } }
        var y = [Float](repeating: 0, count: outChannels * m)  // (Cout, m)
        for c in 0 ..< outChannels { for o in 0 ..< m { y[c * m + o] = bias[c] } }
        cols.withUnsafeBufferPointer { x in y.withUnsafeMutableBufferPointer { y in
            weight.multiplyAdd(x.baseAddress!, n: m, into: y.baseAddress!, scratch: &scratch)
        } }
        var out = [Float](repeating: 0, count: m * outChannels)  // (m, Cout)
        y.withUnsafeBufferPointer { y in out.withUnsafeMutableBufferPointer { csp_transpose(y.baseAddress!, outChannels, m, $0.baseAddress!) } }
        for i in out.indices { out[i] = max(0, out[i]) }
        s.next = end
        // Frames before the next output's first one are not read again.
        let keepFrom = max(s.first, min(s.received, s.next * stride - padding))
        if keepFrom > s.first {
            s.frames.removeFirst((keepFrom - s.first) * inChannels)
            s.first = keepFrom
        }
        return out
    }
}
