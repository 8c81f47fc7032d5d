import Foundation
import Models
import Tensors
import Testing
import Wire

/// Proto/README.md is enough for a third party: csptrain writes real protocol bytes (weights in
/// every encoding, gradient chunks in float32 and bfloat16) and its own gradient of one
/// micro-batch into a fixture, and scripts/check-protocol.py, written from the README and the
/// .proto files alone, decodes every one and computes the gradient itself.
@Suite(.timeLimit(.minutes(2)))
struct ProtocolReferenceTests {
    /// Configs/local.yaml's MLP and data set.
    static let task = SyntheticClassification(inputDim: 32, classes: 8, examples: 16384, noise: 1.5, seed: 1)
    static let model = MLPClassifier(task: task, hiddenDim: 64)
    static let chunkValues = 1000

    static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
    static func hex(_ floats: [Float]) -> String { hex(FloatEncoding.denseBytes(floats)) }

    /// Weights with some tensors sparse, so that the chooser picks each encoding: w1 at 10%
    /// density (Rice-coded gaps), w2 at 50% (bitmask), biases dense.
    static func sparseWeights() -> [Float] {
        var p = model.initialParameters(seed: 1)
        let layout = model.layout
        for (i, spec) in layout.tensors.enumerated() {
            for j in spec.range {
                switch i {
                case 0: if (j * 7919) % 10 != 0 { p[j] = 0 }
                case 2: if (j * 31) % 2 != 0 { p[j] = 0 }
                case 1, 3: p[j] = Float(j % 5 + 1) * 0.01  // all non-zero: dense
                default: break
                }
            }
        }
        return p
    }

    /// One frame per case, with what csptrain decodes it into.
    static func frames() throws -> [[String: Any]] {
        let layout = model.layout
        let v7 = sparseWeights()
        func encode(_ v: [Float], version: UInt64, half: Bool = false, previous: [Float]? = nil) -> WeightsFrame {
            let tensors = layout.tensors.map { spec in
                v.withUnsafeBufferPointer { b in
                    let slice = UnsafeBufferPointer(rebasing: b[spec.range])
                    if let previous {
                        return previous.withUnsafeBufferPointer { pb in
                            EncodedTensor.encode(slice, half: half, previous: UnsafeBufferPointer(rebasing: pb[spec.range]))
                        }
                    }
                    return EncodedTensor.encode(slice, half: half)
                }
            }
            return WeightsFrame(EncodedWeights(version: version, tensors: tensors))
        }
        func decoded(_ frame: WeightsFrame, holding: [Float]?) throws -> [Float] {
            var out = holding ?? [Float](repeating: 0, count: layout.totalCount)
            try frame.bytes.withUnsafeBytes { raw in
                try WeightsDecoding.decode(raw, layout: layout, into: &out, current: holding == nil ? nil : frame.version - 1)
            }
            return out
        }
        var halfRounded = v7
        halfRounded.withUnsafeMutableBufferPointer { FloatEncoding.roundToHalf($0) }
        // The next version: same support, other values (what a step without a support change sends).
        let v8 = v7.map { $0 == 0 ? 0 : $0 * 0.5 + 0.001 }
        let cases: [(String, WeightsFrame, [Float]?)] = [
            ("float32", encode(v7, version: 7), nil),
            ("float16", encode(halfRounded, version: 7, half: true), nil),
            ("values_only", encode(v8, version: 8, previous: v7), v7),
        ]
        return try cases.map { name, frame, holding in
            [
                "name": name,
                "weights": hex(frame.bytes),
                "holding": holding.map { hex($0) } ?? "",
                "decoded": hex(try decoded(frame, holding: holding)),
            ]
        }
    }

    static func fixture() throws -> [String: Any] {
        let layout = model.layout
        var weights = sparseWeights()
        let examples = (0 ..< 32).map { ($0 * 509 + 11) % task.examples }
        var gradient = [Float](repeating: 0, count: layout.totalCount)
        let loss = try weights.withUnsafeMutableBufferPointer { w in
            try gradient.withUnsafeMutableBufferPointer { g in
                try model.lossAndGradient(parameters: UnsafeBufferPointer(w), examples: examples, epoch: 0, gradient: g)
            }
        }
        var chunks: [[String: Any]] = []
        for bf16 in [false, true] {
            let encoder = ChunkEncoder(runID: "fixture-run", session: Data(repeating: 0xab, count: 16), step: 3, microBatch: 5,
                                       exampleCount: examples.count, lossSum: loss, weightsVersion: 7, bf16: bf16)
            for (t, spec) in layout.tensors.enumerated() {
                let count = max(1, (spec.count + chunkValues - 1) / chunkValues)
                for c in 0 ..< count {
                    let range = spec.offset + c * chunkValues ..< spec.offset + min(spec.count, (c + 1) * chunkValues)
                    let size = encoder.size(tensor: t, chunk: c, chunkCount: count, values: range.count)
                    let bytes = [UInt8](unsafeUninitializedCapacity: size) { raw, n in
                        gradient.withUnsafeBufferPointer { g in
                            encoder.write(tensor: t, chunk: c, chunkCount: count, values: UnsafeBufferPointer(rebasing: g[range]),
                                          into: UnsafeMutableRawBufferPointer(raw))
                        }
                        n = size
                    }
                    chunks.append(["bf16": bf16, "request": hex(bytes)])
                }
            }
        }
        return [
            "about": "Written by csptrain's ProtocolReferenceTests for scripts/check-protocol.py (see Proto/README.md).",
            "config": ["seed": 1, "input_dim": task.inputDim, "hidden_dim": model.hiddenDim, "classes": task.classes,
                       "examples": task.examples, "noise": Double(task.noise)],
            "tensors": layout.tensors.map { ["name": $0.name, "shape": $0.shape, "offset": $0.offset] },
            "chunk_values": chunkValues,
            "frames": try frames(),
            "task": ["weights_version": 7, "example_indices": examples, "micro_batch": 5, "step": 3],
            "csptrain_loss_sum": loss,
            "csptrain_gradient": hex(gradient),
            "chunks": chunks,
        ]
    }

    @Test func aReferenceWrittenFromTheDocsDecodesAndComputesWhatCsptrainDoes() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("csptrain-protocol-\(UUID().uuidString).json")
        let data = try JSONSerialization.data(withJSONObject: try Self.fixture(), options: [.sortedKeys])
        try data.write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }

        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/check-protocol.py")
        let (status, stdout, stderr) = try await Child(python: "python3", [script.path, file.path]).wait(seconds: 90)
        let output = stdout + stderr
        #expect(status == 0, "scripts/check-protocol.py: \(output)")
        // It saw each encoding at least once.
        for encoding in ["DENSE_F32", "BITMASK_F32", "RICE_F32", "VALUES", "float16", "bfloat16"] {
            #expect(output.contains(encoding), "check-protocol.py never decoded \(encoding): \(output)")
        }
    }
}
