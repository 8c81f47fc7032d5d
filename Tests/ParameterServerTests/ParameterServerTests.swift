import Foundation
import Testing
@testable import ParameterServer
import Pruning
import Tensors
import Training
import Wire

/// A small seeded generator for test data.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func floats(_ n: Int, scale: Float = 1) -> [Float] { (0 ..< n).map { _ in Float.random(in: -scale ... scale, using: &self) } }
}

struct ParameterServerTests {
    // Three tensors, one of them split into several blocks by a small block size.
    let layout = ParameterLayout([("w", [64, 40], true), ("v", [300], true), ("b", [7], false)])

    func server(lr: Double = 0.1, clip: Double = 0, momentum: Double = 0, fixedPoint: Bool = false,
                projection: any ProjectionStep = IdentityProjection(), weights: [Float]? = nil) -> ParameterServer {
        var o = OptimizerSettings()
        o.kind = .sgd
        o.learningRate = lr
        o.momentum = momentum
        o.clipNorm = clip
        let w = weights ?? [Float](repeating: 0.5, count: layout.totalCount)
        return ParameterServer(layout: layout, settings: .init(optimizer: o, totalSteps: 10, fixedPoint: fixedPoint, halfBroadcast: false),
                               weights: w, broadcast: w, optimizer: Optimizer(settings: o, parameterCount: layout.totalCount),
                               projection: projection, version: 1, timer: { 0 })
    }

    /// Folds whole micro-batch gradients (as one chunk per tensor).
    func fold(_ s: ParameterServer, _ gradients: [[Float]], examples: [Int]) {
        for (mb, g) in gradients.enumerated() {
            for spec in layout.tensors {
                let ok = g.withUnsafeBufferPointer { all in
                    s.fold(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: all[spec.range])), at: spec.offset, examples: examples[mb])
                }
                #expect(ok)
            }
            s.addMicroBatch(mb, examples: examples[mb], lossSum: Double(mb + 1))
        }
    }

    /// One SGD step against the definition: g = Σ examples·g_m / Σ examples, clipped to the norm
    /// limit, w ← w − lr·g.
    @Test func aStepIsTheMeanClippedGradientTimesTheRate() throws {
        var rng = SplitMix(state: 7)
        let gradients = (0 ..< 3).map { _ in rng.floats(layout.totalCount) }
        let examples = [4, 2, 3]
        for clip in [0.0, 1.0] {
            let s = server(clip: clip)
            fold(s, gradients, examples: examples)
            let numbers = try s.apply(step: 0)
            var mean = [Double](repeating: 0, count: layout.totalCount)
            for (m, g) in gradients.enumerated() { for i in mean.indices { mean[i] += Double(examples[m]) * Double(g[i]) } }
            for i in mean.indices { mean[i] /= 9 }
            let norm = mean.reduce(0) { $0 + $1 * $1 }.squareRoot()
            #expect(abs(numbers.gradNorm - norm) <= 1e-5 * norm)
            #expect(numbers.loss == 6.0 / 9 && numbers.examples == 9)
            let factor = clip > 0 && norm > clip ? clip / norm : 1
            for i in mean.indices {
                let expected = 0.5 - 0.1 * mean[i] * factor
                #expect(abs(Double(s.weights[i]) - expected) <= 1e-5, "value \(i)")
            }
            #expect(s.broadcast == s.weights && s.version == 2)
        }
    }

    /// The clip norm is the sum of per-block partial sums in block order: the same bits as a
    /// serial pass over the same blocks, however the blocks were spread over threads.
    @Test func theClipNormAddsBlockSumsInBlockOrder() throws {
        var rng = SplitMix(state: 11)
        let g = rng.floats(layout.totalCount, scale: 3)
        let blocks = Blocks(layout: layout, range: 0 ..< layout.totalCount, maxValues: 512)
        #expect(blocks.ranges.count > layout.tensors.count)  // the big tensor is cut
        #expect(blocks.ranges.first?.lowerBound == 0 && blocks.ranges.last?.upperBound == layout.totalCount)
        for (a, b) in zip(blocks.ranges, blocks.ranges.dropFirst()) { #expect(a.upperBound == b.lowerBound) }
        let serial = g.withUnsafeBufferPointer { all in
            blocks.ranges.map { VectorMath.sumOfSquares(UnsafeBufferPointer(rebasing: all[$0])) }.reduce(0, +)
        }
        for _ in 0 ..< 20 {
            #expect(blocks.map(g) { VectorMath.sumOfSquares($0) }.reduce(0, +).bitPattern == serial.bitPattern)
        }
        let reference = g.reduce(0.0) { $0 + Double($1) * Double($1) }
        #expect(abs(serial - reference) <= 1e-12 * reference)
    }

    /// Deterministic mode: the same chunks folded in any order give the same bits.
    @Test func fixedPointStepsDoNotDependOnArrivalOrder() throws {
        var rng = SplitMix(state: 3)
        let gradients = (0 ..< 4).map { _ in rng.floats(layout.totalCount) }
        var results: [[Float]] = []
        for order in [[0, 1, 2, 3], [3, 1, 0, 2], [2, 3, 1, 0]] {
            let s = server(clip: 0.5, momentum: 0.9, fixedPoint: true)
            for mb in order {
                let g = gradients[mb]
                for spec in layout.tensors.reversed() {
                    _ = g.withUnsafeBufferPointer { all in
                        s.fold(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: all[spec.range])), at: spec.offset, examples: mb + 1)
                    }
                }
                s.addMicroBatch(mb, examples: mb + 1, lossSum: 1)
            }
            _ = try s.apply(step: 0)
            results.append(s.weights)
        }
        #expect(results.allSatisfy { $0.map(\.bitPattern) == results[0].map(\.bitPattern) })
    }

    @Test func aDivergingGradientIsNotApplied() throws {
        let s = server()
        var g = [Float](repeating: 1, count: layout.totalCount)
        g[layout.tensors[1].offset + 3] = .infinity
        fold(s, [g], examples: [1])
        let error = #expect(throws: ParameterServer.StepFailure.self) { try s.apply(step: 0) }
        #expect(error?.description.contains("'v'") == true)
        #expect(s.weights.allSatisfy { $0 == 0.5 } && s.version == 1)
    }

    /// Gradient chunks as a worker writes them are folded where they arrived: no copy.
    @Test func chunksAreFoldedInPlace() throws {
        var rng = SplitMix(state: 5)
        let g = rng.floats(layout.totalCount)
        let s = server(lr: 1)
        let chunkValues = 500
        let encoder = ChunkEncoder(runID: "run", session: Data([1, 2, 3]), step: 0, microBatch: 0, exampleCount: 1, lossSum: 0.5, weightsVersion: 1)
        var chunks = 0
        for (t, spec) in layout.tensors.enumerated() {
            let count = (spec.count + chunkValues - 1) / chunkValues
            for c in 0 ..< count {
                let range = spec.offset + c * chunkValues ..< min(spec.offset + spec.count, spec.offset + (c + 1) * chunkValues)
                // A message body as nng hands it over: its own allocation (malloc: 16-byte aligned).
                let size = encoder.size(tensor: t, chunk: c, chunkCount: count, values: range.count)
                let body = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
                defer { body.deallocate() }
                g.withUnsafeBufferPointer { encoder.write(tensor: t, chunk: c, chunkCount: count, values: UnsafeBufferPointer(rebasing: $0[range]), into: body) }
                let decoded = try RequestDecoding.decode(UnsafeRawBufferPointer(body))
                let values = try #require(decoded.values)
                #expect(s.fold(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(body)[values]), at: range.lowerBound, examples: 1))
                chunks += 1
            }
        }
        s.addMicroBatch(0, examples: 1, lossSum: 0.5)
        #expect(chunks > layout.tensors.count)
        #expect(s.copiedFolds == 0, "\(s.copiedFolds) chunks were copied before folding")
        _ = try s.apply(step: 0)
        for i in 0 ..< layout.totalCount { #expect(s.weights[i] == 0.5 - g[i]) }
    }

    /// bfloat16 chunks are folded as their exactly widened values.
    @Test func bfloat16ChunksFoldTheirRoundedValues() throws {
        var rng = SplitMix(state: 21)
        let g = rng.floats(layout.totalCount)
        let s = server(lr: 1)
        let encoder = ChunkEncoder(runID: "run", session: Data([4]), step: 0, microBatch: 0, exampleCount: 1, lossSum: 0, weightsVersion: 1, bf16: true)
        for (t, spec) in layout.tensors.enumerated() {
            let size = encoder.size(tensor: t, chunk: 0, chunkCount: 1, values: spec.count)
            var body = [UInt8](repeating: 0, count: size)
            body.withUnsafeMutableBytes { raw in g.withUnsafeBufferPointer { encoder.write(tensor: t, chunk: 0, chunkCount: 1, values: UnsafeBufferPointer(rebasing: $0[spec.range]), into: raw) } }
            try body.withUnsafeBytes { raw in
                let decoded = try RequestDecoding.decode(raw)
                #expect(decoded.valuesBF16)
                #expect(s.fold(UnsafeRawBufferPointer(rebasing: raw[try #require(decoded.values)]), at: spec.offset, examples: 1, bf16: true))
            }
        }
        s.addMicroBatch(0, examples: 1, lossSum: 0)
        _ = try s.apply(step: 0)
        for i in 0 ..< layout.totalCount {
            var bits = g[i].bitPattern
            bits &+= 0x7FFF &+ ((bits >> 16) & 1)
            let rounded = Float(bitPattern: bits & 0xFFFF_0000)
            #expect(s.weights[i] == 0.5 - rounded, "value \(i)")
        }
    }

    /// The weights of a version are encoded once however many replies carry them: the delta when
    /// the step is applied, the whole model on the first demand.
    @Test func weightsAreEncodedOncePerVersion() throws {
        var p = PruningSettings()
        p.method = .oneShotMagnitude
        p.schedule.target = 0.5
        p.schedule.startStep = 0
        p.schedule.endStep = 0
        let projection = try p.makeProjection(layout: layout, seed: 1)
        var rng = SplitMix(state: 9)
        let s = server(lr: 0.01, projection: projection, weights: rng.floats(layout.totalCount))
        var held = s.broadcast  // a worker at version 1
        for step in 0 ..< 3 {
            fold(s, [rng.floats(layout.totalCount)], examples: [2])
            let before = s.encodings
            _ = try s.apply(step: step)
            #expect(s.encodings == before + 1)  // the delta
            for _ in 0 ..< 8 { _ = s.full }
            #expect(s.encodings == before + 2)  // the whole model, once
            let delta = try #require(s.delta)
            #expect(delta.version == UInt64(step + 2))
            if step > 0 {
                // The support no longer changes: pruned tensors travel as values only.
                #expect(delta.tensors[0].kind == EncodedTensor.Kind.valuesOnly && delta.tensors[1].kind == EncodedTensor.Kind.valuesOnly)
            }
            let frame = s.broadcast.withUnsafeBufferPointer { WeightsFrame(delta, layout: layout, source: $0) }
            let parsed = try Csptrain_V1_Weights(serializedBytes: frame.bytes)
            try parsed.decode(layout: layout, into: &held, current: UInt64(step + 1))
            #expect(held == s.broadcast)
        }
    }

    /// Where no tensor travels as values only (a dense model), the delta is the whole model byte
    /// for byte: the coordinator serves workers further behind from the same frame.
    @Test func aDeltaWithoutValuesOnlyTensorsIsTheWholeModelByteForByte() throws {
        var rng = SplitMix(state: 4)
        let s = server(lr: 0.01, weights: rng.floats(layout.totalCount))
        fold(s, [rng.floats(layout.totalCount)], examples: [2])
        _ = try s.apply(step: 0)
        let delta = try #require(s.delta)
        #expect(delta.isSelfContained)
        func frame(_ w: EncodedWeights) -> [UInt8] {
            s.broadcast.withUnsafeBufferPointer { WeightsFrame(w, layout: layout, source: $0).bytes }
        }
        #expect(frame(delta) == frame(s.full))
        // A worker that holds nothing decodes it to the current weights.
        var held = [Float](repeating: 0, count: layout.totalCount)
        try Csptrain_V1_Weights(serializedBytes: frame(delta)).decode(layout: layout, into: &held, current: 0)
        #expect(held == s.broadcast)
    }
}
