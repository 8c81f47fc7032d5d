import Coordination
import Foundation
import Tensors
import Wire

/// The decoders that read bytes from the network, each as a fuzz target: bytes in, an outcome
/// out (accepted, or which refusal or decoder error path refused them). A target never traps,
/// whatever the bytes; its memory is bounded by its input (counts come from the model, never
/// from the message).
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// A coordinator request (RequestDecoding: the in-place gradient chunk reader, SwiftProtobuf
    /// for the rest), then the run state machine's answer to it, as the coordinator runs them.
    case request
    /// A weights message (WeightsDecoding: dense, bitmask, Rice, values-only, binary16) into a
    /// small model's buffer, as a worker decodes a task's weights.
    case weights
    /// The Rice-coded positions alone (RiceGaps.decode). Input: a message with field 1 the
    /// entry count, field 2 the non-zero count, field 3 the code.
    case rice
    /// The value decoders alone (FloatEncoding: dense, bitmask, values-only, binary16 widening).
    /// Input: field 1 the decoder, field 2 the entry count, field 3 the mask, field 4 the values,
    /// field 5 the receiver's current values (values-only).
    case encodings
}

/// What fuzzing a target reached: outcomes (accepted forms, refusal codes, decoder error
/// paths, with the numbers in messages replaced by N) and how often.
public struct FuzzOutcomes: Sendable {
    public private(set) var counts: [String: Int] = [:]
    public init() {}
    public mutating func record(_ outcome: String) { counts[outcome, default: 0] += 1 }

    /// A decoder's message with its numbers, quoted names and payload details folded, so that
    /// one code path gives one line.
    public static func path(_ message: String) -> String {
        var out = ""
        var inNumber = false
        var quote = false
        var previous: Character = " "
        for ch in message {
            defer { previous = ch }
            // A quoted name opens after a space or bracket (not an apostrophe: "request's").
            if ch == "'", quote || previous == " " || previous == "(" {
                quote.toggle()
                if quote { out += "'…'" }
                continue
            }
            if quote { continue }
            if ch.isNumber {
                if !inNumber { out += "N" }
                inNumber = true
            } else {
                inNumber = false
                out.append(ch)
            }
        }
        return out
    }
}

/// Runs targets; holds the state the request target keeps between inputs (a run state machine
/// with one member, rebuilt every `rebuildEvery` inputs).
public final class FuzzContext {
    public static let token = [UInt8](repeating: 0x5A, count: 32)
    public static let runID = "fuzz-run"
    /// The member's session and connection: corpus requests use them.
    public static let session = SessionID(Data(repeating: 0xA5, count: JoinHandshake.sessionBytes))
    public static let memberPipe: UInt32 = 1
    /// The run's compute signature (deterministic): proofs with another one are refused.
    public static let signature = "openblas Haswell, kernels avx2+fma"
    /// Every challenge the request target issues has this server nonce, so that the corpus's
    /// proof (and its mutations) reach the proof's checks: a bad MAC, another signature, the
    /// workers' limit.
    public static let serverNonce = Data(repeating: 0x22, count: JoinHandshake.nonceBytes)
    public static let grid = ChunkGrid(tensors: [(0, 10), (10, 3)], chunkValues: 4)
    /// The weights target's model: a dense, a pruned and a small tensor.
    public static let layout = ParameterLayout([(name: "w1", shape: [6, 8], prunable: true), (name: "b1", shape: [8], prunable: false),
                                                (name: "w2", shape: [8, 3], prunable: true)])
    public let rebuildEvery = 2000

    var machine: RunStateMachine
    var now = 0.0
    var handled = 0
    var nextRequest: RequestID = 100
    var weights: [Float]

    public init() {
        machine = Self.makeMachine()
        weights = [Float](repeating: 0, count: Self.layout.totalCount)
    }

    /// Examples in micro-batch 0 of step 0 (what a well-formed chunk must say).
    public var firstMicroBatchExamples: Int { machine.round.microBatches[0].examples.count }

    static func makeMachine() -> RunStateMachine {
        var s = RunStateMachine.Settings(totalSteps: 1_000_000)
        s.maxRequestsInFlight = 4
        s.stepDeadlineSeconds = 1_000_000
        s.maxWorkers = 8
        s.joinAttemptsPerMinute = 100_000
        s.evalEverySteps = 3
        s.evalSets = ["dev": 4]
        s.evalBatch = 2
        s.computeSignature = signature
        let order = DataOrder(seed: 1, examples: 24, globalBatch: 4, microBatches: 2)
        var m = RunStateMachine(settings: s, runID: runID, token: token, order: order, grid: grid, now: 0)
        // The member: Hello, then a proof; its session is the entropy's last bytes.
        let clientNonce = Data(repeating: 0x11, count: 32)
        let origin = Origin(pipe: memberPipe, peer: "10.9.9.9:1", protocolVersion: Wire.protocolVersion, runID: "", session: SessionID(Data()))
        _ = m.handle(.request(1, .hello(workerName: "member", clientNonce: clientNonce), origin,
                              entropy: serverNonce + Data(count: JoinHandshake.sessionBytes), now: 0))
        var proofOrigin = origin
        proofOrigin.runID = runID
        let mac = JoinHandshake.joinMAC(token: token, runID: runID, serverNonce: serverNonce, clientNonce: clientNonce, workerName: "member")
        _ = m.handle(.request(2, .proof(workerName: "member", clientNonce: clientNonce, serverNonce: serverNonce, mac: mac, computeSignature: signature),
                              proofOrigin, entropy: Data(count: JoinHandshake.nonceBytes) + session.bytes, now: 0))
        // It holds micro-batch 0 of step 0: well-formed chunks for it are accepted.
        var work = proofOrigin
        work.session = session
        _ = m.handle(.request(3, .work(haveVersion: 0), work, entropy: Data(), now: 0))
        for id: RequestID in [1, 2, 3] { _ = m.handle(.replySent(id, now: 0)) }
        precondition(m.membership.members[session] != nil && m.round.assignee(of: 0) == session, "the fuzz member could not join")
        return m
    }

    /// Runs `target` on `bytes`; returns the outcome. `foreignConnection`: a request comes on a
    /// connection other than the member's (the member's session is then borrowed).
    public func run(_ target: FuzzTarget, _ bytes: UnsafeRawBufferPointer, foreignConnection: Bool = false) -> String {
        switch target {
        case .request: request(bytes, pipe: foreignConnection ? 2 : Self.memberPipe)
        case .weights: weightsMessage(bytes)
        case .rice: rice(bytes)
        case .encodings: encodings(bytes)
        }
    }

    // MARK: Targets

    private func request(_ bytes: UnsafeRawBufferPointer, pipe: UInt32) -> String {
        handled += 1
        // A fresh run now and then, and once the member is gone (it left, or the run finished).
        if handled % rebuildEvery == 0 || machine.membership.members[Self.session] == nil || machine.isFinished {
            machine = Self.makeMachine()
            now = 0
        }
        let decoded: DecodedRequest
        do { decoded = try RequestDecoding.decode(bytes) } catch {
            return "decoder error: " + FuzzOutcomes.path(error.description)
        }
        // The values a chunk points at are read as the coordinator's fold reads them.
        if let range = decoded.values {
            guard range.lowerBound >= 0, range.upperBound <= bytes.count else { return "BUG: chunk values outside the message" }
        }
        now += 0.01
        let id = nextRequest
        nextRequest += 1
        let entropy = Self.serverNonce + Data((0 ..< JoinHandshake.sessionBytes).map { UInt8(truncatingIfNeeded: Int(id) &* 31 &+ $0) })
        var outcome = "no reply yet (held)"
        var queue = machine.handle(.request(id, decoded.inbound, decoded.origin(pipe: pipe, peer: "10.9.9.\(pipe):4000"), entropy: entropy, now: now))
        while !queue.isEmpty {
            let directive = queue.removeFirst()
            switch directive {
            case let .reply(rid, response):
                if rid == id { outcome = Self.describe(response) }
                queue += machine.handle(.replySent(rid, now: now))
            case let .applyStep(step):
                queue += machine.handle(.stepApplied(.init(step: step), now: now))
            case let .writeCheckpoint(step, _):
                queue += machine.handle(.checkpointWritten(step: step, now: now))
            default:
                break
            }
        }
        return outcome
    }

    static func describe(_ response: Response) -> String {
        switch response {
        case let .refusal(code, _): "refusal \(code)"
        case .challenge: "reply challenge"
        case .welcome: "reply welcome"
        case let .task(t): if case .train = t.kind { "reply task (train)" } else { "reply task (eval)" }
        case let .ack(status): "reply ack \(status)"
        case .wait: "reply wait"
        case .finished: "reply finished"
        }
    }

    private func weightsMessage(_ bytes: UnsafeRawBufferPointer) -> String {
        // A receiver at version 4 with a pruned copy: values-only updates for version 5 apply.
        for i in weights.indices { weights[i] = i % 3 == 0 ? 0 : Float(i) }
        do {
            let version = try WeightsDecoding.decode(bytes, layout: Self.layout, into: &weights, current: 4)
            return version == 5 ? "decoded (delta base)" : "decoded"
        } catch {
            return "decoder error: " + FuzzOutcomes.path(error.description)
        }
    }

    /// The fields of a raw target's input message (numbers and byte strings), nil when it does not parse.
    static func fields(_ bytes: UnsafeRawBufferPointer) -> (numbers: [UInt64: UInt64], blobs: [UInt64: [UInt8]])? {
        guard let parsed = ProtoMutator.parse(Array(bytes)[...], depth: 3) else { return nil }
        var numbers: [UInt64: UInt64] = [:], blobs: [UInt64: [UInt8]] = [:]
        for f in parsed {
            if f.wireType == 0 { numbers[f.number] = f.varint } else if f.wireType == 2 { blobs[f.number] = f.bytes }
        }
        return (numbers, blobs)
    }

    /// Entries a raw target decodes into: the model's sizes are the coordinator's, never the
    /// message's, so they are capped here as a layout caps them.
    static let maxEntries = 1 << 16

    private func rice(_ bytes: UnsafeRawBufferPointer) -> String {
        guard let (numbers, blobs) = Self.fields(bytes) else { return "input framing does not parse" }
        let count = Int((numbers[1] ?? 0) % UInt64(Self.maxEntries + 1))
        let nonZero = Int(clamping: numbers[2] ?? 0)
        let code = blobs[3] ?? []
        let mask = code.withUnsafeBytes { RiceGaps.decode($0, count: count, nonZero: nonZero) }
        guard let mask else { return "rice: " + Self.riceFailure(code, count: count, nonZero: nonZero) }
        guard mask.count == count, mask.lazy.filter({ $0 }).count == nonZero else { return "BUG: rice decoded a mask of the wrong size" }
        return "rice decoded"
    }

    /// Which check of RiceGaps.decode refused the code (mirrors its guards, for the report).
    static func riceFailure(_ code: [UInt8], count: Int, nonZero: Int) -> String {
        if code.isEmpty { return "empty code" }
        if code[0] > 24 { return "parameter k above 24" }
        if nonZero < 0 || nonZero > count { return "more non-zeros than entries" }
        return "truncated code, position past the end, or trailing bits"
    }

    private func encodings(_ bytes: UnsafeRawBufferPointer) -> String {
        guard let (numbers, blobs) = Self.fields(bytes) else { return "input framing does not parse" }
        let count = Int((numbers[2] ?? 0) % UInt64(Self.maxEntries + 1))
        let mask = blobs[3] ?? [], values = blobs[4] ?? [], current = blobs[5] ?? []
        var out = [Float](repeating: 0, count: count)
        let kind = numbers[1] ?? 0
        let ok: Bool = out.withUnsafeMutableBufferPointer { target in
            mask.withUnsafeBytes { m in
                values.withUnsafeBytes { v in
                    switch kind {
                    case 0: return FloatEncoding.decodeDense(v, into: target)
                    case 1: return FloatEncoding.decodeBitmask(mask: m, nonZero: v, into: target)
                    case 2: return FloatEncoding.decodeRice(code: m, nonZero: v, into: target)
                    case 3:
                        // The receiver's copy: non-zero where `current` has a non-zero byte.
                        for i in 0 ..< target.count { target[i] = i < current.count && current[i] != 0 ? 1 : 0 }
                        return FloatEncoding.decodeValuesOnly(v, into: target)
                    default:
                        guard let wide = FloatEncoding.widenHalf(v) else { return false }
                        return wide.count == v.count * 2
                    }
                }
            }
        }
        let names = ["dense", "bitmask", "rice", "values-only"]
        let name = kind < 4 ? names[Int(kind)] : "binary16 widening"
        return ok ? "\(name) decoded" : "\(name) refused"
    }
}
