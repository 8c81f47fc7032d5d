import Foundation
import Testing
@testable import Models
@testable import Tensors

struct RNNTLossTests {
    /// T = 2 frames, classes {∅, a}, label "a"; logits (t, u, k) chosen so that the softmaxes are
    ///     (0, 0): ∅ 0.5,  a 0.5      (0, 1): ∅ 0.25, a 0.75
    ///     (1, 0): ∅ 0.25, a 0.75     (1, 1): ∅ 0.5,  a 0.5
    /// The two alignments: A = a(0,0) ∅(0,1) ∅(1,1) = 0.5·0.25·0.5 = 0.0625 and
    /// B = ∅(0,0) a(1,0) ∅(1,1) = 0.5·0.75·0.5 = 0.1875, so p = 0.25 and the loss is log 4.
    /// ∂L/∂z(t,u,k) = y(t,u,k)·o(t,u) − e(t,u,k), o the share of p through the node, e the share
    /// leaving it by k:
    ///     (0,0): o = 1,    e = (B 0.75, A 0.25)  → (0.5 − 0.75,    0.5 − 0.25)   = (−0.25,    0.25)
    ///     (0,1): o = 0.25, e = (A 0.25, 0)       → (0.0625 − 0.25, 0.1875)       = (−0.1875,  0.1875)
    ///     (1,0): o = 0.75, e = (0, B 0.75)       → (0.1875,        0.5625 − 0.75) = (0.1875, −0.1875)
    ///     (1,1): o = 1,    e = (1, 0)            → (0.5 − 1,       0.5)          = (−0.5,     0.5)
    @Test func handComputedLattice() {
        let logits: [Float] = [0, 0, 0, log(3), 0, log(3), 0, 0]
        let r = logits.withUnsafeBufferPointer { RNNTLoss.loss(logits: $0, frames: 2, classes: 2, labels: [1]) }
        #expect(abs(r.loss - log(4)) < 1e-6)
        let expected: [Double] = [-0.25, 0.25, -0.1875, 0.1875, 0.1875, -0.1875, -0.5, 0.5]
        for (g, e) in zip(r.gradient, expected) { #expect(abs(Double(g) - e) < 1e-6, "\(r.gradient)") }
    }

    /// With no labels the only alignment is T blanks; with one frame, every label then a blank.
    @Test func degenerateLattices() {
        let logits: [Float] = [0, 0, 0, 0, 0, 0]   // uniform over 3 classes
        let blanks = logits.withUnsafeBufferPointer { RNNTLoss.loss(logits: $0, frames: 2, classes: 3, labels: []) }
        #expect(abs(blanks.loss - 2 * log(3)) < 1e-9)
        let oneFrame = logits.withUnsafeBufferPointer { RNNTLoss.loss(logits: $0, frames: 1, classes: 3, labels: [2]) }
        #expect(abs(oneFrame.loss - 2 * log(3)) < 1e-9)
        let bad: [Float] = [.nan, 0, 0, 0, 0, 0]
        let r = bad.withUnsafeBufferPointer { RNNTLoss.loss(logits: $0, frames: 2, classes: 3, labels: []) }
        #expect(r.loss.isNaN && r.gradient.allSatisfy { $0 == 0 })
    }

    @Test func gradientMatchesFiniteDifferences() {
        var rng = SeededRandom(17)
        let T = 5, V = 4, labels = [1, 3, 3], count = T * (labels.count + 1) * V
        let logits = (0 ..< count).map { _ in 1.5 * rng.nextGaussian() }
        func loss(_ z: [Float]) -> Double {
            z.withUnsafeBufferPointer { RNNTLoss.loss(logits: $0, frames: T, classes: V, labels: labels).loss }
        }
        let r = logits.withUnsafeBufferPointer { RNNTLoss.loss(logits: $0, frames: T, classes: V, labels: labels) }
        var worst = 0.0
        for i in 0 ..< count {
            var plus = logits, minus = logits
            plus[i] += 1e-2
            minus[i] -= 1e-2
            let numeric = (loss(plus) - loss(minus)) / 2e-2
            worst = max(worst, abs(numeric - Double(r.gradient[i])) / max(1e-3, abs(numeric) + abs(Double(r.gradient[i]))))
        }
        #expect(worst < 1e-3, "worst relative error \(worst) over \(count) logits")
    }

    /// Against torchaudio.functional.rnnt_loss (scripts/make-rnnt-fixture.py made the fixture).
    @Test func matchesTorchaudio() throws {
        let fixture = try Self.torchaudioFixture()
        var worstLoss = 0.0, worstGradient = 0.0
        for batch in fixture.batches {
            let r = batch.logits.withUnsafeBufferPointer {
                RNNTLoss.batch(logits: $0, frames: batch.frames, classes: batch.shape[3], labels: batch.labels)
            }
            worstLoss = max(worstLoss, abs(r.loss - batch.loss) / abs(batch.loss))
            for (g, e) in zip(r.gradient, batch.gradient) { worstGradient = max(worstGradient, abs(Double(g) - e)) }
        }
        #expect(fixture.batches.count == 3)
        #expect(worstLoss < 1e-5, "worst relative loss error \(worstLoss)")
        #expect(worstGradient < 1e-5, "worst gradient error \(worstGradient)")
    }

    /// Against the numpy lattice DP (scripts/rnnt_oracle.py) on random lattices, and the oracle in
    /// turn against the torchaudio fixture: torch-free, run by scripts/test.sh in .ci/run.
    @Test func matchesTheNumpyOracle() throws {
        var rng = SeededRandom(29)
        var cases: [[String: Any]] = []
        var swift: [RNNTLoss.Result] = []
        for (T, U, V, scale) in [(1, 0, 2, Float(1)), (3, 5, 4, 1), (6, 2, 7, 3), (9, 4, 5, 0.5)] {
            let labels = (0 ..< U).map { _ in 1 + Int(rng.next() % UInt64(V - 1)) }
            let logits = (0 ..< T * (U + 1) * V).map { _ in scale * rng.nextGaussian() }
            cases.append(["logits": logits.map(Double.init), "frames": T, "classes": V, "labels": labels])
            swift.append(logits.withUnsafeBufferPointer { RNNTLoss.loss(logits: $0, frames: T, classes: V, labels: labels) })
        }
        let input = try JSONSerialization.data(withJSONObject: ["cases": cases])
        let output = try Self.runPython(["scripts/rnnt_oracle.py"], stdin: input)
        let results = try #require((try JSONSerialization.jsonObject(with: output) as? [String: Any])?["results"] as? [[String: Any]])
        try #require(results.count == swift.count)
        var worstLoss = 0.0, worstGradient = 0.0
        for (r, o) in zip(swift, results) {
            let loss = try #require(o["loss"] as? Double), gradient = try #require(o["gradient"] as? [Double])
            worstLoss = max(worstLoss, abs(r.loss - loss) / abs(loss))
            #expect(gradient.count == r.gradient.count)
            for (g, e) in zip(r.gradient, gradient) { worstGradient = max(worstGradient, abs(Double(g) - e)) }
        }
        #expect(worstLoss < 1e-9, "worst relative loss error \(worstLoss)")
        #expect(worstGradient < 1e-6, "worst gradient error \(worstGradient)")
        let check = try Self.runPython(["scripts/rnnt_oracle.py", "--check", Self.fixturePath.path], stdin: Data())
        #expect(String(decoding: check, as: UTF8.self).contains("numpy oracle vs torchaudio"))
    }

    struct TorchaudioBatch: Decodable {
        let shape: [Int]
        let frames: [Int]
        let labels: [[Int]]
        let logits: [Float]
        let loss: Double
        let gradient: [Double]
    }

    struct TorchaudioFixture: Decodable {
        let torchaudio: String
        let batches: [TorchaudioBatch]
    }

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static var fixturePath: URL { root.appendingPathComponent("Tests/ModelsTests/Fixtures/rnnt_torchaudio.json") }

    static func torchaudioFixture() throws -> TorchaudioFixture {
        try JSONDecoder().decode(TorchaudioFixture.self, from: Data(contentsOf: fixturePath))
    }

    /// Runs a script of this repository with the tests' Python (scripts/python-env.sh: numpy),
    /// bounded to 60 s; throws with its standard error when it fails.
    static func runPython(_ arguments: [String], stdin: Data) throws -> Data {
        let made = root.appendingPathComponent(".build/pyenv/bin/python").path
        let python = ProcessInfo.processInfo.environment["CSPTRAIN_PYTHON"] ?? (FileManager.default.isExecutableFile(atPath: made) ? made : "python3")
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("rnnt-oracle-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let inURL = scratch.appendingPathComponent("in.json"), outURL = scratch.appendingPathComponent("out.json"),
            errURL = scratch.appendingPathComponent("err.txt")
        try stdin.write(to: inURL)
        FileManager.default.createFile(atPath: outURL.path, contents: nil)
        FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [python] + arguments.enumerated().map { $0.offset == 0 ? root.appendingPathComponent($0.element).path : $0.element }
        process.standardInput = try FileHandle(forReadingFrom: inURL)
        process.standardOutput = try FileHandle(forWritingTo: outURL)
        process.standardError = try FileHandle(forWritingTo: errURL)
        try process.run()
        let deadline = Date().addingTimeInterval(60)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let err = (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
            throw OracleError(description: "\(python) \(arguments.joined(separator: " ")) exited \(process.terminationStatus): \(err) — scripts/test.sh installs numpy into .build/pyenv and sets CSPTRAIN_PYTHON")
        }
        return try Data(contentsOf: outURL)
    }

    struct OracleError: Error, CustomStringConvertible { let description: String }
}
