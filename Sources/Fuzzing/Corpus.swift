import Coordination
import Foundation
import Tensors
import Wire

/// The seed corpus: one valid message of every kind for every target, written by the encoders
/// the coordinator and workers use (Tests/FuzzingTests/Corpus holds them, committed; `csptrain-fuzz
/// corpus DIR` writes them again).
public enum FuzzCorpus {
    /// Seeds by target: (file name, bytes).
    public static func seeds(_ target: FuzzTarget, context: FuzzContext = FuzzContext()) -> [(name: String, bytes: [UInt8])] {
        switch target {
        case .request: requests(examples: context.firstMicroBatchExamples)
        case .weights: weights()
        case .rice: rice()
        case .encodings: encodings()
        }
    }

    static func header(_ body: (inout Request) -> Void, session: Bool = true, step: UInt64 = 0) -> [UInt8] {
        var r = Request()
        r.header = .make(runID: FuzzContext.runID, step: step, session: session ? FuzzContext.session.bytes : Data())
        body(&r)
        return (try? r.serializedBytes()) ?? []
    }

    static func requests(examples: Int) -> [(name: String, bytes: [UInt8])] {
        var seeds: [(String, [UInt8])] = []
        var hello = Request()
        hello.header = .make(runID: "")
        hello.hello = .with { $0.workerName = "fuzz"; $0.clientNonce = Data(repeating: 7, count: 32) }
        seeds.append(("hello", (try? hello.serializedBytes()) ?? []))
        let serverNonce = FuzzContext.serverNonce
        let clientNonce = Data(repeating: 7, count: 32)
        seeds.append(("proof", header({ r in
            r.proof = .with {
                $0.workerName = "fuzz"; $0.clientNonce = clientNonce; $0.serverNonce = serverNonce
                $0.mac = JoinHandshake.joinMAC(token: FuzzContext.token, runID: FuzzContext.runID, serverNonce: serverNonce,
                                               clientNonce: clientNonce, workerName: "fuzz")
                $0.computeSignature = FuzzContext.signature
            }
        }, session: false)))
        seeds.append(("work", header { $0.work = .with { $0.weightsVersion = 1 } }))
        seeds.append(("eval_result", header { r in
            r.evalResult = .with { $0.microBatch = 0; $0.evalSet = "dev"; $0.weightsVersion = 1; $0.words = 10; $0.wordEdits = 2; $0.utterances = 2 }
        }))
        seeds.append(("leave", header { $0.leave = .with { $0.reason = "done" } }))
        seeds.append(("receipt", header { $0.receipt = .with { $0.weightsVersion = 1 } }))
        // Gradient chunks as workers write them: float32 and bfloat16, first and last chunk.
        let grid = FuzzContext.grid
        for (name, tensor, chunk, bf16) in [("chunk_f32", 0, 0, false), ("chunk_f32_last", 0, 2, false), ("chunk_bf16", 1, 0, true)] {
            let encoder = ChunkEncoder(runID: FuzzContext.runID, session: FuzzContext.session.bytes, step: 0, microBatch: 0,
                                       exampleCount: examples, lossSum: 1.25, weightsVersion: 1, bf16: bf16)
            let values = (0 ..< grid.valueCount(tensor: tensor, chunk: chunk)).map { Float($0) * 0.5 - 1 }
            let chunks = grid.tensorChunkCounts[tensor]
            var bytes = [UInt8](repeating: 0, count: encoder.size(tensor: tensor, chunk: chunk, chunkCount: chunks, values: values.count))
            values.withUnsafeBufferPointer { v in
                bytes.withUnsafeMutableBytes { encoder.write(tensor: tensor, chunk: chunk, chunkCount: chunks, values: v, into: $0) }
            }
            seeds.append((name, bytes))
        }
        return seeds
    }

    static func weights() -> [(name: String, bytes: [UInt8])] {
        let layout = FuzzContext.layout
        // w1 pruned to a third (Rice or bitmask), b1 dense, w2 half zero.
        let full = (0 ..< layout.totalCount).map { i -> Float in i % 3 == 0 ? 0 : Float(i) * 0.25 }
        let pruned = full.enumerated().map { i, v in i < layout.tensors[0].count && i % 7 != 0 ? 0 : v }
        func frame(_ values: [Float], version: UInt64, half: Bool = false, previous: [Float]? = nil) -> [UInt8] {
            values.withUnsafeBufferPointer { all in
                let tensors = layout.tensors.map { spec in
                    let tensor = UnsafeBufferPointer(rebasing: all[spec.range])
                    guard let previous else { return EncodedTensor.encode(tensor, half: half) }
                    return Array(previous[spec.range]).withUnsafeBufferPointer { EncodedTensor.encode(tensor, half: half, previous: $0) }
                }
                return WeightsFrame(EncodedWeights(version: version, tensors: tensors)).bytes
            }
        }
        // A values-only delta: version 5 over the receiver's version 4 (same support).
        let receiver = (0 ..< layout.totalCount).map { i -> Float in i % 3 == 0 ? 0 : Float(i) }
        let next = receiver.map { $0 == 0 ? 0 : $0 + 0.5 }
        return [("dense_and_sparse", frame(full, version: 2)), ("pruned", frame(pruned, version: 3)),
                ("half", frame(full, version: 2, half: true)), ("values_only_delta", frame(next, version: 5, previous: receiver))]
    }

    static func message(_ numbers: [(UInt64, UInt64)], _ blobs: [(UInt64, [UInt8])]) -> [UInt8] {
        var fields = numbers.map { ProtoMutator.Field(number: $0.0, wireType: 0, varint: $0.1) }
        fields += blobs.map { ProtoMutator.Field(number: $0.0, wireType: 2, bytes: $0.1) }
        return ProtoMutator.serialize(fields)
    }

    static func rice() -> [(name: String, bytes: [UInt8])] {
        [("sparse", Float(0.05)), ("half", 0.5), ("dense", 0.98)].map { name, density in
            var rng = SeededRandom(key: 11)
            let values = (0 ..< 500).map { _ in rng.nextUnitFloat() < density ? Float(1) : 0 }
            let (code, nonZero) = values.withUnsafeBufferPointer { RiceGaps.encode($0) }
            return (name, message([(1, 500), (2, UInt64(nonZero))], [(3, code)]))
        }
    }

    static func encodings() -> [(name: String, bytes: [UInt8])] {
        var rng = SeededRandom(key: 12)
        let values = (0 ..< 64).map { _ in rng.nextUnitFloat() < 0.3 ? rng.nextGaussian() : 0 }
        return values.withUnsafeBufferPointer { v in
            let dense = FloatEncoding.denseBytes(v)
            let (mask, nonZero) = FloatEncoding.bitmask(v)
            let (rice, _) = RiceGaps.encode(v)
            let support = values.map { $0 == 0 ? UInt8(0) : 1 }
            return [("dense", message([(1, 0), (2, 64)], [(4, dense)])),
                    ("bitmask", message([(1, 1), (2, 64)], [(3, mask), (4, nonZero)])),
                    ("rice", message([(1, 2), (2, 64)], [(3, rice), (4, nonZero)])),
                    ("values_only", message([(1, 3), (2, 64)], [(4, nonZero), (5, support)])),
                    ("half", message([(1, 4), (2, 64)], [(4, FloatEncoding.narrowToHalf(dense))]))]
        }
    }

    // MARK: Files

    /// Writes the seeds of every target under `directory/<target>/<name>.bin`.
    public static func write(to directory: URL) throws {
        let context = FuzzContext()
        for target in FuzzTarget.allCases {
            let folder = directory.appendingPathComponent(target.rawValue)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            for (name, bytes) in seeds(target, context: context) {
                try Data(bytes).write(to: folder.appendingPathComponent(name + ".bin"))
            }
        }
    }

    /// The corpus of `target` under `directory` (file name, bytes), in name order.
    public static func load(_ target: FuzzTarget, from directory: URL) throws -> [(name: String, bytes: [UInt8])] {
        let folder = directory.appendingPathComponent(target.rawValue)
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".bin") }.sorted()
        return try names.map { ($0, [UInt8](try Data(contentsOf: folder.appendingPathComponent($0)))) }
    }
}
