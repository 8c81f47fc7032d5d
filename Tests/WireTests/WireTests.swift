import Crypto
import Foundation
import Testing
@testable import Runtime
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

struct WireCodecTests {
    let layout = ParameterLayout([("w", [4, 8], true), ("b", [3], false)])

    @Test func weightsRoundTripInEveryEncoding() throws {
        let layout = ParameterLayout([("w", [4, 8], true), ("v", [32], true), ("b", [3], false)])
        var values = [Float](repeating: 0, count: layout.totalCount)
        values[3] = 1.5  // w: 1 non-zero of 32 → Rice-coded positions (2 bytes) beat a 4-byte bitmask
        for i in stride(from: 32, to: 62, by: 2) { values[i] = Float(i) }  // v: 15 of 32 → bitmask
        for i in 64 ..< 67 { values[i] = Float(i) }  // b: dense
        let message = WireCodec.weights(values, layout: layout, version: 7)
        #expect(message.tensors.map(\.encoding) == [.riceF32, .bitmaskF32, .denseF32])
        let parsed = try Csptrain_V1_Weights(serializedBytes: message.serializedBytes() as [UInt8])
        var out = [Float](repeating: 9, count: layout.totalCount)
        try WireCodec.decode(parsed, layout: layout, into: &out, current: 0)
        #expect(out == values)
        #expect(parsed.version == 7)
    }

    @Test func weightsThatDoNotDecodeNameTheTensor() {
        var message = WireCodec.weights([Float](repeating: 1, count: layout.totalCount), layout: layout, version: 1)
        message.tensors[1].values.removeLast()
        var out = [Float](repeating: 0, count: layout.totalCount)
        let error = #expect(throws: ProtocolViolation.self) { try WireCodec.decode(message, layout: layout, into: &out, current: 0) }
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
        let delta = WireCodec.weights(v5, layout: layout, version: 5, previous: v4)
        #expect(delta.tensors.map(\.encoding) == [.values, .riceF32, .values, .denseF32])
        #expect(delta.tensors[0].values.count == 7 * 4 && delta.tensors[0].mask.isEmpty && delta.tensors[2].values.isEmpty)
        // A worker at version 4 decodes it into its copy.
        var copy = v4
        try WireCodec.decode(try Csptrain_V1_Weights(serializedBytes: delta.serializedBytes() as [UInt8]), layout: layout, into: &copy, current: 4)
        #expect(copy == v5)
        // One at another version refuses it rather than write values into the wrong places.
        var stale = v4
        let error = #expect(throws: ProtocolViolation.self) { try WireCodec.decode(delta, layout: layout, into: &stale, current: 3) }
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
        let message = WireCodec.weights(rounded, layout: layout, version: 2, half: true)
        #expect(message.tensors.map(\.encoding) == [.riceF32, .bitmaskF32, .denseF32])
        #expect(message.tensors.allSatisfy(\.valuesF16) && message.tensors[2].values.count == 3 * 2)
        var out = [Float](repeating: 9, count: layout.totalCount)
        try WireCodec.decode(message, layout: layout, into: &out, current: 0)
        #expect(out == rounded)  // exact: the coordinator rounded first
        for (a, b) in zip(out, values) { #expect(abs(a - b) <= abs(b) * 0.0005) }
    }

    @Test func everyMessageCarriesVersionRunAndStep() throws {
        var request = Request()
        request.header = WireCodec.header(runID: "run-1", step: 12, session: Data([1, 2]))
        request.chunk = Csptrain_V1_GradientChunk.with { $0.microBatch = 3; $0.values = Data([0, 0, 128, 63]) }
        let parsed = try Request(serializedBytes: request.serializedBytes() as [UInt8])
        #expect(parsed.header.protocolVersion == protocolVersion)
        #expect(parsed.header.runID == "run-1" && parsed.header.step == 12)
        #expect(parsed.chunk.microBatch == 3)
    }
}
