import Coordination
import Foundation
import Synchronization
import Testing
import Transport
import Wire
@testable import Runtime

/// A worker's chunk stream against a stand-in coordinator on loopback: the proof it opens with,
/// answers matched by tag, timeouts, and a stream that fails.
@Suite(.timeLimit(.minutes(1)))
struct ChunkStreamClientTests {
    static let token = [UInt8](repeating: 0x42, count: 32)
    static let session = Data((0 ..< 16).map { UInt8($0 + 100) })

    /// A coordinator's end: sends a nonce, checks the proof, then hands every frame to `answer`,
    /// which returns the answers to write (tag, body), or nil to close the stream.
    final class StandIn: @unchecked Sendable {
        let listener: StreamListener
        let proofValid = Mutex<Bool?>(nil)
        let frames = Mutex<[(tag: UInt32, body: [UInt8])]>([])

        init(answer: @escaping @Sendable (UInt32, [UInt8]) -> [(UInt32, [UInt8])]?) throws {
            listener = try StreamListener("tcp://127.0.0.1:0")
            Thread.detachNewThread { [self] in
                guard let stream = try? listener.accept() else { return }
                let nonce = Data((0 ..< 32).map { _ in UInt8.random(in: 0 ... 255) })
                do {
                    try (ChunkStreamFrame.header(length: 32, tag: 0) + Array(nonce)).withUnsafeBytes { try stream.write([$0]) }
                    var proof = [UInt8](repeating: 0, count: 8 + 48)
                    try proof.withUnsafeMutableBytes { try stream.readExactly(into: $0) }
                    let expected = JoinHandshake.streamMAC(token: ChunkStreamClientTests.token, runID: "run-s", serverNonce: nonce,
                                                           session: ChunkStreamClientTests.session)
                    proofValid.withLock { $0 = Array(proof[8 ..< 24]) == Array(ChunkStreamClientTests.session) && Array(proof[24...]) == Array(expected) }
                    while true {
                        var header = [UInt8](repeating: 0, count: 8)
                        try header.withUnsafeMutableBytes { try stream.readExactly(into: $0) }
                        let (length, tag) = header.withUnsafeBytes { ChunkStreamFrame.parseHeader($0) }
                        var body = [UInt8](repeating: 0, count: length)
                        try body.withUnsafeMutableBytes { try stream.readExactly(into: $0) }
                        frames.withLock { $0.append((tag, body)) }
                        guard let answers = answer(tag, body) else {
                            stream.close()
                            return
                        }
                        for (t, b) in answers {
                            try (ChunkStreamFrame.header(length: b.count, tag: t) + b).withUnsafeBytes { try stream.write([$0]) }
                        }
                    }
                } catch {
                    stream.close()
                }
            }
        }

        var port: String { String(listener.url.split(separator: ":").last!) }
    }

    static func open(_ standIn: StandIn) async throws -> ChunkStreamClient {
        try await ChunkStreamClient.open(url: "tcp://127.0.0.1:\(standIn.port)", tls: nil, token: token, runID: "run-s", session: session, timeout: 5)
    }

    static func send(_ client: ChunkStreamClient, _ values: [Float], timeout: Double = 5) async throws -> [UInt8] {
        let bytes = values.withUnsafeBytes { Array($0) }
        let pointer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 4)
        defer { pointer.deallocate() }
        pointer.copyMemory(from: UnsafeRawBufferPointer(start: bytes, count: bytes.count))
        defer { withExtendedLifetime(bytes) {} }
        let answer = try await client.request(head: [1, 2, 3], values: .init(UnsafeRawBufferPointer(pointer)), tail: [9], timeout: timeout)
        await client.drain()
        return answer
    }

    @Test func framesCarryHeadValuesAndTailAndAnswersFindTheirRequests() async throws {
        // Answers in reverse order of arrival, once two have come: each request gets its own.
        let held = Mutex<[(UInt32, [UInt8])]>([])
        let standIn = try StandIn { tag, body in
            held.withLock { h in
                h.append((tag, Array(body.reversed())))
                guard h.count == 2 else { return [] }
                defer { h.removeAll() }
                return h.reversed()
            }
        }
        let client = try await Self.open(standIn)
        async let first = Self.send(client, [1, 2])
        async let second = Self.send(client, [3])
        let (a, b) = try await (first, second)
        let one = [UInt8]([1, 2, 3]) + [Float(1), 2].withUnsafeBytes { Array($0) } + [9]
        let two = [UInt8]([1, 2, 3]) + [Float(3)].withUnsafeBytes { Array($0) } + [9]
        #expect(a == Array(one.reversed()) && b == Array(two.reversed()))
        #expect(standIn.proofValid.withLock { $0 } == true, "the proof names the session and is the token's MAC of the nonce")
        #expect(Set(standIn.frames.withLock { $0.map(\.tag) }).count == 2 && !standIn.frames.withLock { $0.map(\.tag) }.contains(0))
        #expect(client.failure == nil)
        client.close()
    }

    @Test func anUnansweredRequestTimesOutAndALateAnswerIsIgnored() async throws {
        let count = Mutex(0)
        // The first request is answered only after the second arrives (too late); the second at once.
        let standIn = try StandIn { tag, _ in
            count.withLock { c in
                c += 1
                return c == 1 ? [] : [(tag - 1, [0xAA]), (tag, [0xBB])]
            }
        }
        let client = try await Self.open(standIn)
        let started = Monotonic.now
        await #expect(throws: NNGError.self) { _ = try await Self.send(client, [1], timeout: 0.3) }
        let waited = Monotonic.now - started
        #expect(waited >= 0.29 && waited < 3, "timed out after \(waited) s")
        do { _ = try await Self.send(client, [1], timeout: 0.3) } catch let error as NNGError { #expect(error.isTimeout) }
        #expect(try await Self.send(client, [2]) == [0xBB], "the late answer to the first request is not taken for the second's")
        client.close()
    }

    @Test func aStreamThatFailsFailsItsRequestsAtOnceAndForGood() async throws {
        let standIn = try StandIn { _, _ in nil }  // closes at the first frame
        let client = try await Self.open(standIn)
        do {
            _ = try await Self.send(client, [1, 2, 3], timeout: 20)
            Issue.record("a closed stream answered")
        } catch let error as NNGError {
            #expect(!error.isTimeout, "\(error)")
        }
        #expect(client.failure != nil)
        let started = Monotonic.now
        await #expect(throws: NNGError.self) { _ = try await Self.send(client, [4], timeout: 20) }
        #expect(Monotonic.now - started < 1, "a failed stream refuses at once")
    }

    /// Weights frames, written by the coordinator in pieces and between answers, come whole to
    /// the task that waits for them, or wait for the next one; none that come in time fail.
    @Test func weightsFramesComeWholeToTheirTask() async throws {
        let model = (0 ..< 300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        // The version and the model: a weights frame's body.
        let frame3 = Array(ChunkStreamFrame.weightsPrefix(version: 3, count: model.count).dropFirst(ChunkStreamFrame.headerBytes)) + model
        // At the first chunk: version 3's frame, then the chunk's answer; at the second: nothing.
        let count = Mutex(0)
        let standIn = try StandIn { tag, _ in
            count.withLock { c in
                c += 1
                return c == 1 ? [(ChunkStreamFrame.weightsTag, frame3), (tag, [0x01])] : [(tag, [0x02])]
            }
        }
        let client = try await Self.open(standIn)
        #expect(try await Self.send(client, [1]) == [0x01])
        // Came before it was asked for: kept for the task.
        let body = try await client.weights(version: 3, timeout: 5)
        #expect(body.version == 3 && Array(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(body.bytes)[body.message])) == model)
        // Nothing more comes: a task waiting for version 4 times out, and the stream stays up.
        await #expect(throws: NNGError.self) { _ = try await client.weights(version: 4, timeout: 0.3) }
        #expect(try await Self.send(client, [2]) == [0x02])
        #expect(client.failure == nil)
        client.close()
    }

    /// Two models written for one worker can come out of version order: the newer one is kept.
    @Test func theNewestWeightsStayWhenFramesComeOutOfOrder() async throws {
        func body(_ version: UInt64) -> [UInt8] {
            Array(ChunkStreamFrame.weightsPrefix(version: version, count: 16).dropFirst(ChunkStreamFrame.headerBytes)) + [UInt8](repeating: UInt8(version), count: 16)
        }
        let five = body(5), four = body(4)
        let standIn = try StandIn { tag, _ in [(ChunkStreamFrame.weightsTag, five), (ChunkStreamFrame.weightsTag, four), (tag, [0x01])] }
        let client = try await Self.open(standIn)
        #expect(try await Self.send(client, [1]) == [0x01])
        let got = try await client.weights(version: 5, timeout: 2)
        #expect(got.version == 5 && got.bytes[8] == 5)
        client.close()
    }

    @Test func nobodyListeningFailsTheOpen() async throws {
        let listener = try StreamListener("tcp://127.0.0.1:0")
        let port = listener.url.split(separator: ":").last!
        listener.close()
        await #expect(throws: (any Error).self) {
            _ = try await ChunkStreamClient.open(url: "tcp://127.0.0.1:\(port)", tls: nil, token: Self.token, runID: "r", session: Self.session, timeout: 2)
        }
    }
}
