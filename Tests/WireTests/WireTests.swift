import Crypto
import Foundation
import Testing
import Coordination
@testable import Tensors
@testable import Wire

struct GeneratedCodeTests {
    /// Fails when Proto/ changed but Sources/Wire/Generated was not regenerated
    /// (scripts/generate-protos.sh). Same recipe as scripts/proto-hash.sh.
    @Test func generatedCodeIsCurrent() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let protoDir = root.appendingPathComponent("Proto")
        let enumerator = try #require(FileManager.default.enumerator(atPath: protoDir.path))
        let files = enumerator.compactMap { $0 as? String }.filter { $0.hasSuffix(".proto") }
            .sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        #expect(!files.isEmpty)
        var data = Data()
        for f in files {
            data.append(Data((f + "\n").utf8))
            data.append(try Data(contentsOf: protoDir.appendingPathComponent(f)))
        }
        let digest = SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
        let recorded = try String(contentsOf: root.appendingPathComponent("Sources/Wire/Generated/PROTO_SHA256"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(digest == recorded, "Proto/ changed: run scripts/generate-protos.sh and commit Sources/Wire/Generated")
    }
}

/// Encodes `values` as a broadcast would (one chooser, one frame) and parses the frame with
/// SwiftProtobuf: the hand-written framing must be valid protobuf.
func weights(_ values: [Float], layout: ParameterLayout, version: UInt64, previous: [Float]? = nil, half: Bool = false) throws -> Csptrain_V1_Weights {
    let tensors = values.withUnsafeBufferPointer { v in
        layout.tensors.map { spec in
            let now = UnsafeBufferPointer(rebasing: v[spec.range])
            guard let previous else { return EncodedTensor.encode(now, half: half) }
            return previous.withUnsafeBufferPointer { p in EncodedTensor.encode(now, half: half, previous: UnsafeBufferPointer(rebasing: p[spec.range])) }
        }
    }
    return try Csptrain_V1_Weights(serializedBytes: WeightsFrame(EncodedWeights(version: version, tensors: tensors)).bytes)
}

struct WeightsWireTests {
    let layout = ParameterLayout([("w", [4, 8], true), ("b", [3], false)])

    @Test func weightsRoundTripInEveryEncoding() throws {
        let layout = ParameterLayout([("w", [4, 8], true), ("v", [32], true), ("b", [3], false)])
        var values = [Float](repeating: 0, count: layout.totalCount)
        values[3] = 1.5  // w: 1 non-zero of 32 → Rice-coded positions (2 bytes) beat a 4-byte bitmask
        for i in stride(from: 32, to: 62, by: 2) { values[i] = Float(i) }  // v: 15 of 32 → bitmask
        for i in 64 ..< 67 { values[i] = Float(i) }  // b: dense
        let message = try weights(values, layout: layout, version: 7)
        #expect(message.tensors.map(\.encoding) == [.riceF32, .bitmaskF32, .denseF32])
        let parsed = try Csptrain_V1_Weights(serializedBytes: message.serializedBytes() as [UInt8])
        var out = [Float](repeating: 9, count: layout.totalCount)
        try parsed.decode(layout: layout, into: &out, current: 0)
        #expect(out == values)
        #expect(parsed.version == 7)
    }

    @Test func weightsThatDoNotDecodeNameTheTensor() throws {
        var message = try weights([Float](repeating: 1, count: layout.totalCount), layout: layout, version: 1)
        message.tensors[1].values.removeLast()
        var out = [Float](repeating: 0, count: layout.totalCount)
        let error = #expect(throws: ProtocolViolation.self) { try message.decode(layout: layout, into: &out, current: 0) }
        #expect(error?.description.contains("'b'") == true)
    }

    @Test func valuesOnlyWhileTheSupportHoldsAndOnlyForThePreviousVersion() throws {
        // w: sparse, same support at versions 4 and 5; v: its support moves; e: empty (all zero);
        // b: dense. Only w and the all-zero e can go as values only.
        let layout = ParameterLayout([("w", [4, 8], true), ("v", [32], true), ("e", [16], true), ("b", [3], false)])
        var v4 = [Float](repeating: 0, count: layout.totalCount)
        for i in stride(from: 0, to: 32, by: 5) { v4[i] = Float(i) + 0.5 }
        v4[40] = 2
        for i in 80 ..< 83 { v4[i] = Float(i) }
        var v5 = v4
        for i in stride(from: 0, to: 32, by: 5) { v5[i] = -Float(i) - 0.25 }
        v5[40] = 0
        v5[41] = 3
        v5[81] = 7
        let delta = try weights(v5, layout: layout, version: 5, previous: v4)
        #expect(delta.tensors.map(\.encoding) == [.values, .riceF32, .values, .denseF32])
        #expect(delta.tensors[0].values.count == 7 * 4 && delta.tensors[0].mask.isEmpty && delta.tensors[2].values.isEmpty)
        // A worker at version 4 decodes it into its copy.
        var copy = v4
        try delta.decode(layout: layout, into: &copy, current: 4)
        #expect(copy == v5)
        // One at another version refuses it rather than write values into the wrong places.
        var stale = v4
        let error = #expect(throws: ProtocolViolation.self) { try delta.decode(layout: layout, into: &stale, current: 3) }
        #expect(error?.description.contains("'w'") == true && error?.description.contains("version 3") == true)
    }

    @Test func halfPrecisionValuesInEveryEncoding() throws {
        let layout = ParameterLayout([("w", [4, 8], true), ("v", [32], true), ("b", [3], false)])
        var values = [Float](repeating: 0, count: layout.totalCount)
        values[3] = 1.5
        for i in stride(from: 32, to: 62, by: 2) { values[i] = Float(i) / 3 }
        for i in 64 ..< 67 { values[i] = -Float(i) / 7 }
        var rounded = values
        rounded.withUnsafeMutableBufferPointer { FloatEncoding.roundToHalf($0) }
        #expect(rounded != values)  // thirds and sevenths are not binary16 numbers
        let message = try weights(rounded, layout: layout, version: 2, half: true)
        #expect(message.tensors.map(\.encoding) == [.riceF32, .bitmaskF32, .denseF32])
        #expect(message.tensors.allSatisfy(\.valuesF16) && message.tensors[2].values.count == 3 * 2)
        var out = [Float](repeating: 9, count: layout.totalCount)
        try message.decode(layout: layout, into: &out, current: 0)
        #expect(out == rounded)  // exact: the coordinator rounded first
        for (a, b) in zip(out, values) { #expect(abs(a - b) <= abs(b) * 0.0005) }
    }

    @Test func everyMessageCarriesVersionRunAndStep() throws {
        var request = Request()
        request.header = Csptrain_V1_Header.make(runID: "run-1", step: 12, session: Data([1, 2]))
        request.chunk = Csptrain_V1_GradientChunk.with { $0.microBatch = 3; $0.values = Data([0, 0, 128, 63]) }
        let parsed = try Request(serializedBytes: request.serializedBytes() as [UInt8])
        #expect(parsed.header.protocolVersion == protocolVersion)
        #expect(parsed.header.runID == "run-1" && parsed.header.step == 12)
        #expect(parsed.chunk.microBatch == 3)
    }
}

struct InPlaceFramingTests {
    /// A chunk request written by ChunkEncoder is valid protobuf, and the coordinator's decoder
    /// reads it in place: the values' range lies inside the received bytes.
    @Test func chunkRequestsAreWrittenAndReadInPlace() throws {
        let values: [Float] = (0 ..< 1000).map { Float($0) * 0.25 - 7 }
        let encoder = ChunkEncoder(runID: "run-9", session: Data([9, 8, 7]), step: 41, microBatch: 3, exampleCount: 17,
                                   lossSum: 12.5, weightsVersion: 42)
        for offset in 0 ..< 4 {  // the decoder must not care how the message body is aligned
            let size = encoder.size(tensor: 2, chunk: 1, chunkCount: 5, values: values.count)
            var buffer = [UInt8](repeating: 0xEE, count: size + offset)
            buffer.withUnsafeMutableBytes { raw in
                values.withUnsafeBufferPointer { v in
                    encoder.write(tensor: 2, chunk: 1, chunkCount: 5, values: v, into: UnsafeMutableRawBufferPointer(rebasing: raw[offset...]))
                }
            }
            let body = Array(buffer[offset...])
            let parsed = try Request(serializedBytes: body)
            #expect(parsed.chunk.values == Data(values.withUnsafeBytes { Array($0) }))
            #expect(parsed.header.step == 41 && parsed.header.runID == "run-9" && parsed.chunk.tensor == 2 && parsed.chunk.lossSum == 12.5)
            try buffer.withUnsafeBytes { raw in
                let bytes = UnsafeRawBufferPointer(rebasing: raw[offset...])
                let decoded = try RequestDecoding.decode(bytes)
                guard case let .chunk(c) = decoded.inbound, let range = decoded.values else {
                    Issue.record("not decoded as a chunk")
                    return
                }
                #expect(c == ChunkHeader(microBatch: 3, tensor: 2, chunkIndex: 1, chunkCount: 5, exampleCount: 17, lossSum: 12.5,
                                         weightsVersion: 42, valueCount: 1000, sumOfSquares: c.sumOfSquares))
                let reference = values.reduce(0.0) { $0 + Double($1) * Double($1) }
                #expect(abs(c.sumOfSquares - reference) <= 1e-9 * reference)
                #expect(range.count == 4000 && range.upperBound <= bytes.count)
                #expect(range.lowerBound % 4 == 0, "the values start at byte \(range.lowerBound): the coordinator would have to copy them to fold them")
                #expect(Array(bytes[range]) == values.withUnsafeBytes { Array($0) })
                #expect(decoded.step == 41 && decoded.session == SessionID(Data([9, 8, 7])) && decoded.protocolVersion == protocolVersion)
            }
        }
    }

    /// The chunk stream writes a chunk as the encoder's bytes before the values, the values from
    /// the gradient, and its bytes after them: together exactly what `write` produces, for every
    /// padding the alignment needs, with and without a weights version.
    @Test func aChunkWrittenAroundItsValuesIsTheSameRequest() throws {
        for (session, version, count) in [(Data([9, 8, 7]), UInt64(42), 1000), (Data(repeating: 5, count: 16), 0, 1), (Data([1]), 300, 4097),
                                          (Data([1, 2]), 1 << 40, 33)] {
            for microBatch in [0, 1, 200] {
                let values: [Float] = (0 ..< count).map { Float($0) * 0.5 - 3 }
                let encoder = ChunkEncoder(runID: "run-1", session: session, step: 9, microBatch: microBatch, exampleCount: 5,
                                           lossSum: microBatch == 0 ? 0 : 2.25, weightsVersion: version)
                var whole = [UInt8](repeating: 0, count: encoder.size(tensor: 1, chunk: 2, chunkCount: 7, values: count))
                whole.withUnsafeMutableBytes { raw in values.withUnsafeBufferPointer { encoder.write(tensor: 1, chunk: 2, chunkCount: 7, values: $0, into: raw) } }
                let (prefix, suffix) = try #require(encoder.frame(tensor: 1, chunk: 2, chunkCount: 7, valueCount: count))
                let around = prefix + values.withUnsafeBytes { Array($0) } + suffix
                #expect(around == whole, "session \(session.count) bytes, version \(version), \(count) values, micro-batch \(microBatch)")
                #expect(prefix.count % 4 == 0, "the values start at byte \(prefix.count)")
            }
        }
        let bf16 = ChunkEncoder(runID: "r", session: Data([1]), step: 0, microBatch: 0, exampleCount: 1, lossSum: 1, weightsVersion: 1, bf16: true)
        #expect(bf16.frame(tensor: 0, chunk: 0, chunkCount: 1, valueCount: 8) == nil, "bf16 values are converted, not sent as they lie")
    }

    @Test func chunkStreamHeadersRoundTrip() {
        for (length, tag) in [(0, UInt32(0)), (1_048_640, 1), (Int(UInt32.max), UInt32.max), (77, 0x0102_0304)] {
            let header = ChunkStreamFrame.header(length: length, tag: tag)
            #expect(header.count == ChunkStreamFrame.headerBytes)
            let parsed = header.withUnsafeBytes { ChunkStreamFrame.parseHeader($0) }
            #expect(parsed.length == length && parsed.tag == tag)
        }
        // Little-endian on the wire, whatever the machine.
        #expect(ChunkStreamFrame.header(length: 0x0A0B_0C0D, tag: 1) == [0x0D, 0x0C, 0x0B, 0x0A, 1, 0, 0, 0])
    }

    /// bfloat16 chunks: each value rounded to nearest, ties to even, and read back exactly.
    @Test func bfloat16ChunksRoundToNearestEven() throws {
        let values: [Float] = [1, -2.5, 1.00390625 /* exactly halfway: stays 1 */, 1.01171875 /* halfway: up to 1.015625 */,
                               3.0e38, 1e-40, -0.0, .infinity, 0.1]
        func reference(_ x: Float) -> Float {
            var bits = x.bitPattern
            bits &+= 0x7FFF &+ ((bits >> 16) & 1)
            return Float(bitPattern: bits & 0xFFFF_0000)
        }
        let encoder = ChunkEncoder(runID: "r", session: Data([1]), step: 3, microBatch: 1, exampleCount: 2, lossSum: 1, weightsVersion: 4, bf16: true)
        var buffer = [UInt8](repeating: 0, count: encoder.size(tensor: 0, chunk: 0, chunkCount: 1, values: values.count))
        buffer.withUnsafeMutableBytes { raw in values.withUnsafeBufferPointer { encoder.write(tensor: 0, chunk: 0, chunkCount: 1, values: $0, into: raw) } }
        let parsed = try Request(serializedBytes: buffer)
        #expect(parsed.chunk.valuesBf16 && parsed.chunk.values.count == values.count * 2)
        let decoded = try buffer.withUnsafeBytes { try RequestDecoding.decode($0) }
        guard case let .chunk(c) = decoded.inbound, let range = decoded.values else { Issue.record("not a chunk"); return }
        #expect(decoded.valuesBF16 && c.valueCount == values.count && !c.sumOfSquares.isFinite)  // the infinity shows
        let widened: [Float] = stride(from: range.lowerBound, to: range.upperBound, by: 2).map {
            Float(bitPattern: UInt32(buffer[$0]) << 16 | UInt32(buffer[$0 + 1]) << 24)
        }
        #expect(widened.map(\.bitPattern) == values.map { reference($0).bitPattern })
        #expect(widened[2] == 1 && widened[3] == 1.015625 && widened[0] == 1 && widened[1] == -2.5)
    }

    @Test func nonFiniteValuesShowInTheSumOfSquares() throws {
        let encoder = ChunkEncoder(runID: "r", session: Data([1]), step: 0, microBatch: 0, exampleCount: 1, lossSum: 1, weightsVersion: 1)
        for bad in [Float.nan, .infinity] {
            let values: [Float] = [1, 2, bad, 4]
            var buffer = [UInt8](repeating: 0, count: encoder.size(tensor: 0, chunk: 0, chunkCount: 1, values: 4))
            buffer.withUnsafeMutableBytes { raw in values.withUnsafeBufferPointer { encoder.write(tensor: 0, chunk: 0, chunkCount: 1, values: $0, into: raw) } }
            let decoded = try buffer.withUnsafeBytes { try RequestDecoding.decode($0) }
            guard case let .chunk(c) = decoded.inbound else { Issue.record("not a chunk"); return }
            #expect(!c.sumOfSquares.isFinite)
        }
    }

    @Test func malformedRequestsAreRefusedWithTheReason() {
        // A chunk whose values are not whole float32s, and bytes that are not protobuf at all.
        var request = Request()
        request.header = Csptrain_V1_Header.make(runID: "r")
        request.chunk = Csptrain_V1_GradientChunk.with { $0.values = Data([1, 2, 3]) }
        let bytes: [UInt8] = (try? request.serializedBytes()) ?? []
        let error = #expect(throws: ProtocolViolation.self) { try bytes.withUnsafeBytes { try RequestDecoding.decode($0) } }
        #expect(error?.description.contains("3 bytes") == true)
        let garbage: [UInt8] = [0xFF, 0xFF, 0xFF]
        #expect(throws: ProtocolViolation.self) { try garbage.withUnsafeBytes { try RequestDecoding.decode($0) } }
    }

    /// A task reply carries the version's weights frame as its field 3, after the task's other
    /// fields: SwiftProtobuf reads it as one message, and N replies share one frame.
    @Test func taskRepliesShareOneWeightsFrame() throws {
        let layout = ParameterLayout([("w", [4, 8], true), ("b", [3], false)])
        var values = [Float](repeating: 0, count: layout.totalCount)
        for i in stride(from: 0, to: 35, by: 3) { values[i] = Float(i) - 0.5 }
        let tensors = values.withUnsafeBufferPointer { v in layout.tensors.map { EncodedTensor.encode(UnsafeBufferPointer(rebasing: v[$0.range])) } }
        let frame = WeightsFrame(EncodedWeights(version: 6, tensors: tensors))
        let run = RunDescription(configYAML: "steps: 1\n", layout: layout, chunkValues: 16, dataFingerprint: "fp")
        var framed = 0
        for mb in 0 ..< 3 {
            let task = TaskAssignment(kind: .train(epoch: 2), index: mb, examples: [mb, mb + 10], weightsVersion: 6,
                                      weights: .full(version: 6), deadlineSeconds: 4)
            let reply = ReplyEncoding.frame(.task(task), runID: "run", step: 5, run: run) { attachment in
                framed += 1
                return attachment == .full(version: 6) ? frame : nil
            }
            #expect(reply.weights === frame)
            let parsed = try Reply(serializedBytes: reply.bytes)
            #expect(parsed.task.microBatch == UInt32(mb) && parsed.task.exampleIndices == [UInt64(mb), UInt64(mb + 10)])
            #expect(parsed.task.epoch == 2 && parsed.task.deadlineMs == 4000 && parsed.header.step == 5)
            var out = [Float](repeating: 1, count: layout.totalCount)
            try parsed.task.weights.decode(layout: layout, into: &out, current: UInt64?.none)
            #expect(out == values && parsed.task.weights.version == 6)
        }
        #expect(framed == 3)
    }

    @Test func everyRefusalCodeHasItsOwnWireCode() {
        let codes: [RefusalCode] = [.badProof, .versionMismatch, .unknownSession, .malformed, .wrongRun, .challengeExpired,
                                    .incompatible, .overloaded, .tooLarge, .notAssigned]
        #expect(Set(codes.map { ReplyEncoding.wireCode($0).rawValue }).count == codes.count)
    }
}
