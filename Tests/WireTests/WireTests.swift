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
        try WireCodec.decode(parsed, layout: layout, into: &out)
        #expect(out == values)
        #expect(parsed.version == 7)
    }

    @Test func weightsThatDoNotDecodeNameTheTensor() {
        var message = WireCodec.weights([Float](repeating: 1, count: layout.totalCount), layout: layout, version: 1)
        message.tensors[1].values.removeLast()
        var out = [Float](repeating: 0, count: layout.totalCount)
        let error = #expect(throws: ProtocolViolation.self) { try WireCodec.decode(message, layout: layout, into: &out) }
        #expect(error?.description.contains("'b'") == true)
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
