import Foundation
import Testing
@testable import Transport

/// nng byte streams over TCP loopback: what the chunk stream stands on.
@Suite(.timeLimit(.minutes(1)))
struct ByteStreamTests {
    /// Runs `body` on a thread of its own (the streams' calls block) and awaits its result.
    static func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
        }
    }

    @Test func scatteredWritesArriveInOrderAndReadsFillExactly() async throws {
        let listener = try StreamListener("tcp://127.0.0.1:0")
        #expect(!listener.url.hasSuffix(":0"), "the bound port is filled in: \(listener.url)")
        // 3 MiB in three parts from three buffers, one of them empty, read back 4 bytes then the rest.
        let a = (0 ..< 1_000_003).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let b = (0 ..< 2_145_725).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 1) }
        let expected = a + b
        let server = Task { try await Self.onThread { () -> [UInt8] in
            let stream = try listener.accept()
            var head = [UInt8](repeating: 0, count: 4), rest = [UInt8](repeating: 0, count: expected.count - 4)
            try head.withUnsafeMutableBytes { try stream.readExactly(into: $0) }
            try rest.withUnsafeMutableBytes { try stream.readExactly(into: $0) }
            return head + rest
        } }
        let url = listener.url
        try await Self.onThread {
            let stream = try StreamDialer.dial(url, timeout: .seconds(5))
            try a.withUnsafeBytes { pa in try b.withUnsafeBytes { pb in try stream.write([pa, UnsafeRawBufferPointer(start: nil, count: 0), pb]) } }
        }
        let received = try await server.value
        #expect(received.count == expected.count)
        #expect(received == expected)
    }

    @Test func aClosedPeerEndsReadsAndATimeoutSaysSo() async throws {
        let listener = try StreamListener("tcp://127.0.0.1:0")
        let url = listener.url
        let results = try await Self.onThread { () -> (timedOut: Bool, closed: Bool) in
            let client = try StreamDialer.dial(url, timeout: .seconds(5))
            let server = try listener.accept()
            var byte = [UInt8](repeating: 0, count: 1)
            var timedOut = false
            do { _ = try byte.withUnsafeMutableBytes { try server.read(into: $0, timeout: .milliseconds(50)) } } catch { timedOut = (error as? NNGError)?.isTimeout == true }
            client.close()
            var closed = false
            do { _ = try byte.withUnsafeMutableBytes { try server.read(into: $0, timeout: .seconds(5)) } } catch { closed = (error as? NNGError)?.isTimeout == false }
            return (timedOut, closed)
        }
        #expect(results.timedOut, "a read with nothing to read times out")
        #expect(results.closed, "the peer's close ends the read with an error, not a timeout")
    }

    @Test func dialingAPortNobodyListensOnFails() async throws {
        let listener = try StreamListener("tcp://127.0.0.1:0")
        let url = listener.url
        listener.close()
        await #expect(throws: NNGError.self) {
            _ = try await Self.onThread { try StreamDialer.dial(url, timeout: .seconds(2)) }
        }
    }
}
