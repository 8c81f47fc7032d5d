import CKernels
import Coordination
import Foundation
import SwiftProtobuf
import Tensors

public typealias Request = Csptrain_V1_Request
public typealias Reply = Csptrain_V1_Reply

/// The protocol version this build speaks (Proto/csptrain/v1).
public let protocolVersion: UInt32 = 1

/// A received request as the coordinator needs it: its envelope and what it asks. A gradient
/// chunk's values are not copied: `values` is their range in the received bytes.
public struct DecodedRequest: Sendable {
    public var protocolVersion: UInt32
    public var runID: String
    public var session: SessionID
    public var step: UInt64
    /// The worker's number for the request (0: not numbered); see ``Origin/sequence``.
    public var sequence: UInt64 = 0
    public var inbound: Inbound
    public var values: Range<Int>?
    /// The chunk's values are bfloat16 (2 bytes each) rather than float32.
    public var valuesBF16 = false

    public func origin(pipe: UInt32, peer: String) -> Origin {
        Origin(pipe: pipe, peer: peer, protocolVersion: protocolVersion, runID: runID, session: session, step: step,
               sequence: sequence)
    }
}

public enum RequestDecoding {
    /// Decodes a `csptrain.v1.Request`; a gradient chunk is read in place (its values checked
    /// for finiteness and summed in squares as they are read, once). The error says what is wrong.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(ProtocolViolation) -> DecodedRequest {
        var reader = ProtoBytes.Reader(bytes)
        var headerRange: Range<Int>?
        var chunkRange: Range<Int>?
        var otherBody = false
        while !reader.atEnd {
            guard let (number, value) = reader.field() else {
                throw ProtocolViolation("the request is not a valid csptrain.v1.Request (\(bytes.count) bytes): malformed field at byte \(reader.position)")
            }
            switch (number, value) {
            case let (1, .bytes(r)): headerRange = r
            case let (13, .bytes(r)): chunkRange = r
            default: otherBody = true
            }
        }
        guard let chunkRange, !otherBody else { return try decodeGeneric(bytes) }
        var header = Csptrain_V1_Header()
        if let headerRange {
            do { header = try Csptrain_V1_Header(serializedBytes: borrowedData(UnsafeRawBufferPointer(rebasing: bytes[headerRange]))) } catch {
                throw ProtocolViolation("the request's header does not parse: \(error)")
            }
        }
        var c = ProtoBytes.Reader(bytes, range: chunkRange)
        var chunk = ChunkHeader(microBatch: 0, tensor: 0, chunkIndex: 0, chunkCount: 0, exampleCount: 0, lossSum: 0,
                                weightsVersion: 0, valueCount: 0, sumOfSquares: 0)
        var values = chunkRange.lowerBound ..< chunkRange.lowerBound
        var bf16 = false
        func small(_ v: UInt64, _ what: String) throws(ProtocolViolation) -> Int {
            guard v <= UInt64(UInt32.max) else { throw ProtocolViolation("gradient chunk: \(what) \(v) is out of range") }
            return Int(v)
        }
        while !c.atEnd {
            guard let (number, value) = c.field() else { throw ProtocolViolation("gradient chunk: malformed field at byte \(c.position)") }
            switch (number, value) {
            case let (1, .varint(v)): chunk.microBatch = try small(v, "micro_batch")
            case let (2, .varint(v)): chunk.tensor = try small(v, "tensor")
            case let (3, .varint(v)): chunk.chunkIndex = try small(v, "chunk_index")
            case let (4, .varint(v)): chunk.chunkCount = try small(v, "chunk_count")
            case let (5, .varint(v)): chunk.exampleCount = try small(v, "example_count")
            case let (6, .fixed64(v)): chunk.lossSum = Double(bitPattern: v)
            case let (7, .bytes(r)): values = r
            case let (8, .varint(v)): chunk.weightsVersion = v
            case (9, .bytes): break  // padding
            case let (10, .varint(v)): bf16 = v != 0
            default: throw ProtocolViolation("gradient chunk: unexpected field \(number) or wire type")
            }
        }
        let width = bf16 ? 2 : 4
        guard values.count % width == 0 else {
            throw ProtocolViolation("gradient chunk values hold \(values.count) bytes, not a whole number of \(bf16 ? "bfloat16" : "float32") values")
        }
        chunk.valueCount = values.count / width
        let raw = UnsafeRawBufferPointer(rebasing: bytes[values])
        chunk.sumOfSquares = bf16 ? VectorMath.sumOfSquares(bf16Bytes: raw) : VectorMath.sumOfSquares(littleEndianBytes: raw)
        return DecodedRequest(protocolVersion: header.protocolVersion, runID: header.runID, session: SessionID(header.session),
                              step: header.step, sequence: header.sequence, inbound: .chunk(chunk), values: values, valuesBF16: bf16)
    }

    /// Every other request is small: SwiftProtobuf parses it.
    static func decodeGeneric(_ bytes: UnsafeRawBufferPointer) throws(ProtocolViolation) -> DecodedRequest {
        let request: Request
        do { request = try Request(serializedBytes: borrowedData(bytes)) } catch {
            throw ProtocolViolation("the request is not a valid csptrain.v1.Request (\(bytes.count) bytes): \(error)")
        }
        let h = request.header
        let inbound: Inbound
        switch request.body {
        case let .hello(m)?: inbound = .hello(workerName: m.workerName, clientNonce: m.clientNonce)
        case let .proof(m)?:
            inbound = .proof(workerName: m.workerName, clientNonce: m.clientNonce, serverNonce: m.serverNonce, mac: m.mac,
                             computeSignature: m.computeSignature)
        case let .work(m)?: inbound = .work(haveVersion: m.weightsVersion)
        case let .evalResult(m)?:
            func n(_ v: UInt64) -> Int { Int(clamping: v) }
            inbound = .evalResult(batch: Int(m.microBatch), set: m.evalSet, weightsVersion: m.weightsVersion,
                                  counts: EvaluationCounts(wordEdits: n(m.wordEdits), words: n(m.words), characterEdits: n(m.charEdits),
                                                           characters: n(m.chars), utterances: Int(m.utterances)))
        case let .leave(m)?: inbound = .leave(reason: m.reason)
        case let .receipt(m)?: inbound = .receipt(weightsVersion: m.weightsVersion)
        case .chunk?: throw ProtocolViolation("a gradient chunk with other bodies in the same request")
        case nil: throw ProtocolViolation("the request has no body (expected hello, proof, work, chunk, eval_result, leave or receipt)")
        }
        return DecodedRequest(protocolVersion: h.protocolVersion, runID: h.runID, session: SessionID(h.session), step: h.step,
                              sequence: h.sequence, inbound: inbound, values: nil)
    }

    /// A Data view of bytes, without copying them, for parsing within their scope (SwiftProtobuf
    /// copies what it keeps).
    static func borrowedData(_ bytes: UnsafeRawBufferPointer) -> Data {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return Data() }
        return Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: base), count: bytes.count, deallocator: .none)
    }
}

/// A micro-batch's gradient chunks, serialised straight from the gradient into message bodies.
public struct ChunkEncoder: Sendable {
    let header: [UInt8]
    let microBatch: Int
    let exampleCount: Int
    let lossSum: Double
    let weightsVersion: UInt64
    /// Values as bfloat16, rounded to nearest (coordinator.gradient_values: bf16).
    let bf16: Bool

    public init(runID: String, session: Data, step: UInt64, microBatch: Int, exampleCount: Int, lossSum: Double, weightsVersion: UInt64,
                bf16: Bool = false) {
        self.bf16 = bf16
        var h = Csptrain_V1_Header()
        h.protocolVersion = protocolVersion
        h.runID = runID
        h.session = session
        h.step = step
        header = (try? h.serializedBytes()) ?? []
        self.microBatch = microBatch
        self.exampleCount = exampleCount
        self.lossSum = lossSum
        self.weightsVersion = weightsVersion
    }

    /// Where the chunk's fields go: the padding (nil: none) puts the values at a multiple of 4
    /// bytes from the start of the message.
    struct Layout {
        let body: Int
        let padding: Int?
        let total: Int
    }

    func layout(tensor: Int, chunk: Int, chunkCount: Int, values: Int) -> Layout {
        func field(_ n: Int, _ v: UInt64) -> Int { v == 0 ? 0 : ProtoBytes.tagSize(n) + ProtoBytes.varintSize(v) }
        let scalars = field(1, UInt64(microBatch)) + field(2, UInt64(tensor)) + field(3, UInt64(chunk)) + field(4, UInt64(chunkCount))
            + field(5, UInt64(exampleCount)) + (lossSum.bitPattern == 0 ? 0 : ProtoBytes.tagSize(6) + 8)
        let width = bf16 ? 2 : 4
        let valuesField = values == 0 ? 0 : ProtoBytes.fieldSize(7, length: values * width)
        let headerField = header.isEmpty ? 0 : ProtoBytes.fieldSize(1, length: header.count)
        let trailer = field(8, weightsVersion) + (bf16 ? ProtoBytes.tagSize(10) + 1 : 0)
        for padding in [nil, 0, 1, 2, 3] as [Int?] {
            let pad = padding.map { ProtoBytes.fieldSize(9, length: $0) } ?? 0
            let body = scalars + pad + valuesField + trailer
            let beforeBody = headerField + ProtoBytes.tagSize(13) + ProtoBytes.varintSize(UInt64(body))
            let valuesAt = beforeBody + scalars + pad + (values == 0 ? 0 : ProtoBytes.tagSize(7) + ProtoBytes.varintSize(UInt64(values * width)))
            if valuesAt % 4 == 0 || padding == 3 { return Layout(body: body, padding: padding, total: beforeBody + body) }
        }
        fatalError("unreachable: one of five paddings aligns the values")
    }

    /// Bytes of the request for one chunk of `values` values.
    public func size(tensor: Int, chunk: Int, chunkCount: Int, values: Int) -> Int {
        layout(tensor: tensor, chunk: chunk, chunkCount: chunkCount, values: values).total
    }

    /// Writes the request into `out` (exactly `size(...)` bytes): the values are copied once,
    /// from the gradient into the message, and start at a multiple of 4 bytes into it.
    public func write(tensor: Int, chunk: Int, chunkCount: Int, values: UnsafeBufferPointer<Float>, into out: UnsafeMutableRawBufferPointer) {
        let l = layout(tensor: tensor, chunk: chunk, chunkCount: chunkCount, values: values.count)
        var w = ProtoBytes.Writer(out)
        writeHead(&w, l, tensor: tensor, chunk: chunk, chunkCount: chunkCount)
        if !values.isEmpty, bf16 {
            w.lengthDelimited(7, length: values.count * 2)
            csp_to_bf16(values.baseAddress!, w.buffer.baseAddress! + w.position, values.count)
            w.position += values.count * 2
        } else if !values.isEmpty {
            w.lengthDelimited(7, length: values.count * 4)
            #if _endian(little)
            w.bytes(UnsafeRawBufferPointer(values))
            #else
            FloatEncoding.denseBytes(values).withUnsafeBytes { w.bytes($0) }
            #endif
        }
        writeTail(&w)
        precondition(w.position == out.count, "chunk request: wrote \(w.position) of \(out.count) bytes")
    }

    /// The request's bytes before and after its values, for a writer that sends the values
    /// straight from the gradient (a byte stream's scatter/gather write): `prefix ‖ values as
    /// little-endian float32 ‖ suffix` is exactly what `write` produces. Nil where the values are
    /// not sent as they are in memory (bf16, or a big-endian machine).
    public func frame(tensor: Int, chunk: Int, chunkCount: Int, valueCount: Int) -> (prefix: [UInt8], suffix: [UInt8])? {
        #if _endian(little)
        guard !bf16, valueCount > 0 else { return nil }
        let l = layout(tensor: tensor, chunk: chunk, chunkCount: chunkCount, values: valueCount)
        let suffixCount = (weightsVersion == 0 ? 0 : ProtoBytes.tagSize(8) + ProtoBytes.varintSize(weightsVersion))
        var prefix = [UInt8](repeating: 0, count: l.total - valueCount * 4 - suffixCount)
        var suffix = [UInt8](repeating: 0, count: suffixCount)
        prefix.withUnsafeMutableBytes {
            var w = ProtoBytes.Writer($0)
            writeHead(&w, l, tensor: tensor, chunk: chunk, chunkCount: chunkCount)
            w.lengthDelimited(7, length: valueCount * 4)
            precondition(w.position == $0.count, "chunk request prefix: wrote \(w.position) of \($0.count) bytes")
        }
        suffix.withUnsafeMutableBytes {
            var w = ProtoBytes.Writer($0)
            writeTail(&w)
            precondition(w.position == $0.count, "chunk request suffix: wrote \(w.position) of \($0.count) bytes")
        }
        return (prefix, suffix)
        #else
        return nil
        #endif
    }

    private func writeHead(_ w: inout ProtoBytes.Writer, _ l: Layout, tensor: Int, chunk: Int, chunkCount: Int) {
        if !header.isEmpty { header.withUnsafeBytes { w.bytes(1, $0) } }
        w.lengthDelimited(13, length: l.body)
        w.uint(1, UInt64(microBatch))
        w.uint(2, UInt64(tensor))
        w.uint(3, UInt64(chunk))
        w.uint(4, UInt64(chunkCount))
        w.uint(5, UInt64(exampleCount))
        w.double(6, lossSum)
        if let padding = l.padding {
            w.lengthDelimited(9, length: padding)
            for _ in 0 ..< padding { w.buffer[w.position] = 0; w.position += 1 }
        }
    }

    private func writeTail(_ w: inout ProtoBytes.Writer) {
        w.uint(8, weightsVersion)
        if bf16 { w.uint(10, 1) }
    }
}

extension Csptrain_V1_Header {
    /// A request's or reply's envelope in this build's protocol version.
    public static func make(runID: String, step: UInt64 = 0, session: Data = Data(), sequence: UInt64 = 0) -> Csptrain_V1_Header {
        var h = Csptrain_V1_Header()
        h.protocolVersion = Wire.protocolVersion
        h.runID = runID
        h.step = step
        h.session = session
        h.sequence = sequence
        return h
    }
}
