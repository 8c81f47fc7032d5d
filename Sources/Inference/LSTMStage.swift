import CKernels

/// One direction of an LSTM layer (LSTMDirection's inference side) over feature-major columns:
/// x (I, T·B) with column t·B + b, output (H, T·B) likewise. The input products of all T·B
/// columns are one product; each step then adds W_hh · h_{t−1} over B columns and runs the same
/// C cell as training, on the (4H, B) gate block as one row of 4·(H·B) values.
struct LSTMStage: Sendable {
    let inputWeight: PackedMatrix     // (4H, I)
    let recurrentWeight: PackedMatrix // (4H, H)
    let bias: [Float]                 // (4H) b_ih + b_hh
    let hidden: Int
    let reverse: Bool

    /// The recurrent state of B sequences.
    struct State: Sendable {
        var h: [Float]                // (H, B)
        var c: [Float]                // (H, B)
        var nextC: [Float]
        var tanhC: [Float]
        var bias: [Float]             // (4H, B): each gate's bias repeated per column
        let batch: Int

        init(hidden: Int, batch: Int, bias: [Float]) {
            h = [Float](repeating: 0, count: hidden * batch)
            c = h
            nextC = h
            tanhC = h
            self.batch = batch
            self.bias = bias.flatMap { [Float](repeating: $0, count: batch) }
        }
    }

    func initialState(batch: Int) -> State { State(hidden: hidden, batch: batch, bias: bias) }

    /// Runs T steps of B columns from `state`; returns the outputs (H, T·B).
    func run(_ x: [Float], steps T: Int, state s: inout State, scratch: inout [Float], times: inout LayerTimes?,
             name: String) -> [Float] {
        let B = s.batch, H = hidden, G = 4 * hidden, n = T * B
        var out = [Float](repeating: 0, count: H * n)
        guard T > 0 else { return out }
        var pre = [Float](repeating: 0, count: G * n)   // (4H, T·B) = W_ih · x
        LayerTimes.measure(&times, name + ".input") {
            x.withUnsafeBufferPointer { x in pre.withUnsafeMutableBufferPointer { p in
                inputWeight.multiplyAdd(x.baseAddress!, n: n, into: p.baseAddress!, scratch: &scratch)
            } }
        }
        // Time-major copies, so that each step reads and writes contiguous rows (a strided walk
        // over (4H, T·B) touches one cache line per gate row at every step).
        var preT = [Float](repeating: 0, count: G * n)   // (T·B, 4H)
        var outT = [Float](repeating: 0, count: H * n)   // (T·B, H)
        var a = [Float](repeating: 0, count: G * B)      // (4H, B) this step's gates
        LayerTimes.measure(&times, name + ".recurrent") {
            pre.withUnsafeBufferPointer { p in preT.withUnsafeMutableBufferPointer { csp_transpose(p.baseAddress!, G, n, $0.baseAddress!) } }
            preT.withUnsafeBufferPointer { preT in outT.withUnsafeMutableBufferPointer { outT in
                for t in 0 ..< T {
                    a.withUnsafeMutableBufferPointer { a in
                        let rows = preT.baseAddress! + t * B * G    // (B, 4H)
                        if B == 1 { a.baseAddress!.update(from: rows, count: G) } else { csp_transpose(rows, B, G, a.baseAddress!) }
                        s.h.withUnsafeBufferPointer { h in
                            recurrentWeight.multiplyAdd(h.baseAddress!, n: B, into: a.baseAddress!, scratch: &scratch)
                        }
                        s.bias.withUnsafeBufferPointer { bias in s.c.withUnsafeBufferPointer { c in
                            s.nextC.withUnsafeMutableBufferPointer { next in s.tanhC.withUnsafeMutableBufferPointer { tc in
                                s.h.withUnsafeMutableBufferPointer { h in
                                    csp_lstm_cell_forward(a.baseAddress!, bias.baseAddress!, c.baseAddress!, next.baseAddress!,
                                                          tc.baseAddress!, h.baseAddress!, 1, H * B)
                                }
                            } }
                        } }
                    }
                    swap(&s.c, &s.nextC)
                    s.h.withUnsafeBufferPointer { h in
                        let dst = outT.baseAddress! + t * B * H      // (B, H)
                        if B == 1 { dst.update(from: h.baseAddress!, count: H) } else { csp_transpose(h.baseAddress!, H, B, dst) }
                    }
                }
            } }
            outT.withUnsafeBufferPointer { o in out.withUnsafeMutableBufferPointer { csp_transpose(o.baseAddress!, n, H, $0.baseAddress!) } }
        }
        return out
    }
}

/// Seconds spent per layer, when asked for (the benchmark's time shares).
public struct LayerTimes: Sendable {
    public var seconds: [String: Double] = [:]
    public init() {}

    @inline(__always)
    static func measure<T>(_ times: inout LayerTimes?, _ name: String, _ body: () -> T) -> T {
        guard times != nil else { return body() }
        let clock = ContinuousClock(), start = clock.now
        let result = body()
        let d = clock.now - start
        times!.seconds[name, default: 0] += Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
        return result
    }
}
