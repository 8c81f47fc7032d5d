import Coordination
import Foundation
import SwiftProtobuf
import Tensors

/// What every welcome carries besides the session: the run's configuration and model.
public struct RunDescription: Sendable {
    public var configYAML: String
    public var tensors: [Csptrain_V1_TensorInfo]
    public var chunkValues: Int
    public var dataFingerprint: String
    /// The port workers send gradient chunks to as stream frames; 0: as requests.
    public var chunkStreamPort = 0
    public init(configYAML: String, layout: ParameterLayout, chunkValues: Int, dataFingerprint: String) {
        self.configYAML = configYAML
        tensors = layout.wireTensors
        self.chunkValues = chunkValues
        self.dataFingerprint = dataFingerprint
    }
}

/// A reply ready to send: its bytes up to the weights, and the weights frame it shares with
/// every other reply of the same version.
public struct ReplyFrame: Sendable {
    public let head: [UInt8]
    public let weights: WeightsFrame?
    /// With `weights`: the same reply whose task says the weights come on the chunk stream
    /// (`Task.weights_on_stream`) instead of carrying them, for a worker that has one.
    public let streamHead: [UInt8]?

    public init(head: [UInt8], weights: WeightsFrame?, streamHead: [UInt8]? = nil) {
        self.head = head
        self.weights = weights
        self.streamHead = streamHead
    }

    public var count: Int { head.count + (weights.map { ProtoBytes.fieldSize(3, length: $0.bytes.count) } ?? 0) }

    /// Writes the reply into `out` (exactly `count` bytes).
    public func write(into out: UnsafeMutableRawBufferPointer) {
        var w = ProtoBytes.Writer(out)
        head.withUnsafeBytes { w.bytes($0) }
        if let weights { weights.bytes.withUnsafeBytes { w.bytes(3, $0) } }
        precondition(w.position == out.count, "reply: wrote \(w.position) of \(out.count) bytes")
    }

    /// The reply as one array (tests, small replies).
    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        out.withUnsafeMutableBytes { write(into: $0) }
        return out
    }
}

public enum ReplyEncoding {
    /// Frames `response`. `weights` supplies the frame a task's attachment names.
    public static func frame(_ response: Response, runID: String, step: Int, run: RunDescription,
                             weights: (WeightsAttachment) -> WeightsFrame?) -> ReplyFrame {
        var reply = Reply()
        reply.header = header(runID: runID, step: step)
        var attached: WeightsFrame?
        switch response {
        case let .challenge(nonce):
            reply.challenge = Csptrain_V1_Challenge.with { $0.serverNonce = nonce }
        case let .welcome(workerID, session, mac):
            reply.header.session = session.bytes
            reply.welcome = Csptrain_V1_Welcome.with {
                $0.workerID = workerID
                $0.serverMac = mac
                $0.configYaml = run.configYAML
                $0.tensors = run.tensors
                $0.chunkValues = UInt32(run.chunkValues)
                $0.dataFingerprint = run.dataFingerprint
                $0.chunkStreamPort = UInt32(run.chunkStreamPort)
            }
        case let .task(task):
            attached = weights(task.weights)
            reply.task = Csptrain_V1_Task.with {
                $0.microBatch = UInt32(task.index)
                $0.exampleIndices = task.examples.map { UInt64($0) }
                $0.weightsVersion = task.weightsVersion
                $0.deadlineMs = UInt32(clamping: Int(min(task.deadlineSeconds * 1000, Double(UInt32.max))))
                switch task.kind {
                case let .train(epoch):
                    $0.epoch = UInt64(epoch)
                case let .eval(set):
                    $0.kind = .eval
                    $0.evalSet = set
                }
            }
        case let .ack(status):
            reply.ack = Csptrain_V1_ChunkAck.with {
                switch status {
                case .accepted: $0.status = .accepted
                case .duplicate: $0.status = .duplicate
                case .stale: $0.status = .stale
                }
            }
        case .wait:
            reply.wait = Csptrain_V1_Wait.with { $0.retryAfterMs = 0 }
        case let .finished(reason):
            reply.finished = Csptrain_V1_Finished.with { $0.reason = reason }
        case let .refusal(code, reason):
            reply.refusal = Csptrain_V1_Refusal.with {
                $0.code = wireCode(code)
                $0.reason = reason
            }
        }
        guard let attached, case let .task(task)? = reply.body else {
            return ReplyFrame(head: (try? reply.serializedBytes()) ?? [], weights: nil)
        }
        // The task's field 3 (weights) is framed after its other fields: protobuf takes fields in
        // any order, so the shared weights bytes are written once into each reply, never re-encoded.
        let headerBytes: [UInt8] = (try? reply.header.serializedBytes()) ?? []
        let taskBytes: [UInt8] = (try? task.serializedBytes()) ?? []
        let taskLength = taskBytes.count + ProtoBytes.fieldSize(3, length: attached.bytes.count)
        var head = [UInt8](repeating: 0, count: ProtoBytes.fieldSize(1, length: headerBytes.count)
            + ProtoBytes.tagSize(12) + ProtoBytes.varintSize(UInt64(taskLength)) + taskBytes.count)
        head.withUnsafeMutableBytes { raw in
            var w = ProtoBytes.Writer(raw)
            headerBytes.withUnsafeBytes { w.bytes(1, $0) }
            w.lengthDelimited(12, length: taskLength)
            taskBytes.withUnsafeBytes { w.bytes($0) }
        }
        var onStream = reply
        onStream.task.weightsOnStream = attached.version
        return ReplyFrame(head: head, weights: attached, streamHead: try? onStream.serializedBytes())
    }

    public static func header(runID: String, step: Int, session: Data = Data()) -> Csptrain_V1_Header {
        var h = Csptrain_V1_Header()
        h.protocolVersion = protocolVersion
        h.runID = runID
        h.step = UInt64(max(0, step))
        h.session = session
        return h
    }

    public static func wireCode(_ code: RefusalCode) -> Csptrain_V1_Refusal.Code {
        switch code {
        case .badProof: .badProof
        case .versionMismatch: .versionMismatch
        case .unknownSession: .unknownSession
        case .malformed: .malformed
        case .wrongRun: .wrongRun
        case .challengeExpired: .challengeExpired
        case .incompatible: .incompatible
        case .overloaded: .overloaded
        case .tooLarge: .tooLarge
        case .notAssigned: .notAssigned
        }
    }
}

extension Csptrain_V1_Reply {
    /// Parses a received reply where it lies (SwiftProtobuf copies only what it keeps).
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws -> Csptrain_V1_Reply {
        try Csptrain_V1_Reply(serializedBytes: RequestDecoding.borrowedData(bytes))
    }

    /// Parses a received reply, leaving a task's weights where they lie: the reply comes back
    /// without them, and `weights` is their range in `bytes`, for ``WeightsDecoding``.
    public static func parseLeavingWeights(_ bytes: UnsafeRawBufferPointer) throws -> (reply: Csptrain_V1_Reply, weights: Range<Int>?) {
        var reader = ProtoBytes.Reader(bytes)
        var task: (field: Range<Int>, body: Range<Int>)?
        while !reader.atEnd {
            let start = reader.position
            guard let (number, value) = reader.field() else { return (try parse(bytes), nil) }
            if number == 12, case let .bytes(body) = value { task = (start ..< reader.position, body) }
        }
        guard let task else { return (try parse(bytes), nil) }
        var inner = ProtoBytes.Reader(bytes, range: task.body)
        var weights: (field: Range<Int>, body: Range<Int>)?
        while !inner.atEnd {
            let start = inner.position
            guard let (number, value) = inner.field() else { return (try parse(bytes), nil) }
            if number == 3, case let .bytes(body) = value { weights = (start ..< inner.position, body) }
        }
        guard let weights else { return (try parse(bytes), nil) }
        // The reply again without the weights field: the task's length shrinks by its size.
        let taskLength = task.body.count - weights.field.count
        var stripped: [UInt8] = []
        stripped.reserveCapacity(bytes.count - weights.field.count)
        stripped += bytes[0 ..< task.field.lowerBound]
        stripped += [UInt8](repeating: 0, count: ProtoBytes.tagSize(12) + ProtoBytes.varintSize(UInt64(taskLength)))
        stripped.withUnsafeMutableBytes { raw in
            var w = ProtoBytes.Writer(UnsafeMutableRawBufferPointer(rebasing: raw[task.field.lowerBound...]))
            w.lengthDelimited(12, length: taskLength)
        }
        stripped += bytes[task.body.lowerBound ..< weights.field.lowerBound]
        stripped += bytes[weights.field.upperBound ..< task.body.upperBound]
        stripped += bytes[task.field.upperBound...]
        return (try Csptrain_V1_Reply(serializedBytes: stripped), weights.body)
    }
}
