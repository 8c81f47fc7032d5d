import Testing
@testable import Pruning
@testable import Tensors

struct SVDTests {
    @Test func singularValuesMatchNumpyAndTheFactorsRebuildTheMatrix() throws {
        // numpy.linalg.svd of this 4 × 3 matrix: [6.264673286677, 4.834598676800173, 1.8386202015309259].
        let a: [Float] = [4, 0, 2, 1, 3, -1, 0, -2, 5, 2, 1, 1]
        let svd = try #require(a.withUnsafeBufferPointer { SVD($0, rows: 4, columns: 3) })
        let expected = [6.264673286677, 4.834598676800173, 1.8386202015309259]
        for (s, e) in zip(svd.singularValues, expected) { #expect(abs(Double(s) - e) < 1e-5) }
        var rebuilt = [Float](repeating: 0, count: 12)
        rebuilt.withUnsafeMutableBufferPointer { svd.truncated(3, into: $0) }
        for (x, y) in zip(rebuilt, a) { #expect(abs(x - y) < 1e-5) }
        // Left singular vectors are orthonormal columns.
        let l = svd.leftColumns(3)
        for i in 0 ..< 3 {
            for j in 0 ..< 3 {
                let dot = (0 ..< 4).reduce(Float(0)) { $0 + l[$1 * 3 + i] * l[$1 * 3 + j] }
                #expect(abs(dot - (i == j ? 1 : 0)) < 1e-5)
            }
        }
    }

    @Test func truncationErrorIsTheDroppedSingularValues() throws {
        // Eckart–Young: ‖A − A_r‖_F² = Σ_{i>r} σ_i².
        var rng = SeededRandom(11)
        let (m, n) = (12, 7)
        let a = (0 ..< m * n).map { _ in rng.nextGaussian() }
        let svd = try #require(a.withUnsafeBufferPointer { SVD($0, rows: m, columns: n) })
        var a2 = [Float](repeating: 0, count: m * n)
        a2.withUnsafeMutableBufferPointer { svd.truncated(2, into: $0) }
        let error = zip(a, a2).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }
        let dropped = svd.singularValues[2...].reduce(0.0) { $0 + Double($1 * $1) }
        #expect(abs(error - dropped) < 1e-3 * dropped)
    }
}

struct LowRankTests {
    static let layout: ParameterLayout = {
        var l = ParameterLayout()
        _ = l.append("conv.0.weight", shape: [8, 2, 3], prunable: true)
        _ = l.append("lstm.weight_ih", shape: [32, 16], prunable: true)
        _ = l.append("lstm.bias", shape: [32], prunable: false)
        _ = l.append("conv.1.weight", shape: [16, 8, 3], prunable: true)
        return l
    }()

    func numericalRank(_ w: ArraySlice<Float>, rows: Int, columns: Int) -> Int {
        let svd = Array(w).withUnsafeBufferPointer { SVD($0, rows: rows, columns: columns) }!
        return svd.singularValues.filter { $0 > 1e-4 * svd.singularValues[0] }.count
    }

    @Test func ranksFollowTheScheduleAndStayBetweenUpdates() throws {
        var settings = PruningSettings()
        settings.method = .lowRank
        settings.exclude = ["conv.0.*"]
        settings.schedule.kind = .cubic
        settings.schedule.target = 0.75
        settings.schedule.startStep = 0
        settings.schedule.endStep = 10
        settings.schedule.interval = 5
        var projection = try #require(try settings.makeProjection(layout: Self.layout, seed: 1) as? LowRankProjection)
        var rng = SeededRandom(4)
        var w = (0 ..< Self.layout.totalCount).map { _ in rng.nextGaussian() }
        var out = w
        var updates: [SupportUpdate] = []
        for step in 0 ..< 14 {
            for i in w.indices { w[i] += 0.05 * rng.nextGaussian() }   // what an optimizer step does
            let u = w.withUnsafeMutableBufferPointer { wv in
                out.withUnsafeMutableBufferPointer { projection.project(weights: wv, gradient: UnsafeBufferPointer(wv), step: step, learningRate: 0.01, layout: Self.layout, broadcast: $0) }
            }
            if let u { updates.append(u) }
            let ih = Self.layout.tensors[1]
            if step >= 5 {
                // Between updates the projection keeps the rank the last update chose.
                let r = projection.factors.first { $0.spec.name == ih.name }!.rank!
                #expect(numericalRank(out[ih.range], rows: 32, columns: 16) == r, "step \(step)")
            }
        }
        #expect(updates.map(\.step) == [0, 5, 10])
        // At the target: r = ⌊0.25 · 32·16 / 48⌋ = 2 for the LSTM matrix, ⌊0.25 · 16·24 / 40⌋ = 2 for conv.1.
        let last = updates.last!
        #expect(last.layers.map(\.name) == ["lstm.weight_ih", "conv.1.weight"])
        #expect(last.layers.map(\.rank) == [2, 2])
        #expect(last.layers.map(\.parameters) == [2 * 48, 2 * 40])
        // Stored parameters decide the reported sparsity; the excluded conv.0 and the bias stay dense.
        let report = projection.sparsityReport(out, layout: Self.layout)
        let prunable = Double(48 + 512 + 384)
        #expect(abs(report.prunable - (1 - Double(48 + 96 + 80) / prunable)) < 1e-9)
        #expect(Array(out[Self.layout.tensors[2].range]) == Array(w[Self.layout.tensors[2].range]))
    }

    @Test func rankForATarget() {
        #expect(LowRankProjection.rank(rows: 1024, columns: 512, sparsity: 0.5) == 170)
        #expect(LowRankProjection.rank(rows: 1024, columns: 256, sparsity: 0.9) == 20)
        #expect(LowRankProjection.rank(rows: 10, columns: 10, sparsity: 0.99) == 1)
        #expect(LowRankProjection.rank(rows: 10, columns: 10, sparsity: 0) == nil)
    }
}
