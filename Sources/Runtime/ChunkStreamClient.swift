import Coordination
import Dispatch
import Foundation
import Synchronization
import Transport
import Wire

/// A worker's end of its chunk stream (Proto/README.md, "The chunk stream"): gradient chunks
/// written as frames straight from the gradient (scatter/gather: the encoded fields before the
/// values, the values where they lie, the fields after), answered by frames of the same tag.
///
/// A writer thread writes the frames in order; a reader thread reads the answers and hands each
/// to the request that waits for its tag, and ends requests whose time is up. A request waits
/// as an exchange on a REQ context does: an answer, a timeout (`isTimeout`: the caller sends the
/// chunk again), or "closed" once the stream has failed, after which the caller sends its
/// chunks as requests.
///
/// Values are written from the caller's memory: a caller must not change or free it until
/// `drain` returns (every frame that reads it written, or dropped with the stream).
final class ChunkStreamClient: Sendable {
    /// Values a frame writes from the caller's memory (see `drain`).
    struct Values: @unchecked Sendable {
        let bytes: UnsafeRawBufferPointer
        init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }
    }

    /// A weights frame's body, read straight from the stream into memory of its own: the
    /// version (8 bytes), then the `Weights` message.
    final class WeightsBody: @unchecked Sendable {
        let bytes: UnsafeMutableRawBufferPointer
        var version: UInt64 { UInt64(littleEndian: UnsafeRawBufferPointer(bytes).loadUnaligned(as: UInt64.self)) }
        /// Where the `Weights` message lies in `bytes`.
        var message: Range<Int> { 8 ..< bytes.count }

        init(count: Int) { bytes = .allocate(byteCount: count, alignment: 16) }
        deinit { bytes.deallocate() }
    }

    /// The largest weights frame a worker reads (as its REQ socket's reply limit).
    static let maxWeightsBytes = 512 << 20

    private struct Write {
        let tag: UInt32
        let head: [UInt8]
        let values: UnsafeRawBufferPointer
        let tail: [UInt8]
    }

    private struct State {
        var nextTag: UInt32 = 1
        var waiting: [UInt32: (deadline: Double, continuation: CheckedContinuation<[UInt8], any Error>)] = [:]
        var writes: [Write] = []
        /// Writes taken from the queue and not yet finished.
        var writing = 0
        var drained: [CheckedContinuation<Void, Never>] = []
        var failure: NNGError?
        var failureReported = false
        /// The newest weights that came, until a task takes them.
        var weights: WeightsBody?
        var weightsWaiting: [(version: UInt64, deadline: Double, key: UInt64, continuation: CheckedContinuation<WeightsBody, any Error>)] = []
    }

    private let stream: ByteStream
    /// A frame not written within this long (a peer that stopped reading, a dead link the
    /// kernel has not noticed yet) fails the stream.
    private let writeTimeout: Double
    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)

    var peer: String { stream.peer }
    /// Why the stream no longer carries chunks, once it does not.
    var failure: NNGError? { state.withLock { $0.failure } }

    /// The failure, the first time it is asked for after the stream failed (to say so once).
    func unreportedFailure() -> NNGError? {
        state.withLock { s in
            guard let failure = s.failure, !s.failureReported else { return nil }
            s.failureReported = true
            return failure
        }
    }

    private init(stream: ByteStream, writeTimeout: Double) {
        self.stream = stream
        self.writeTimeout = writeTimeout
    }

    deinit { stream.close() }

    /// Dials `url`, reads the coordinator's nonce and proves `session` with the run's token;
    /// then starts the writer and the reader. Blocking work runs on a thread of its own.
    /// `timeout` bounds the dial, the proof and each frame's write.
    static func open(url: String, tls: TLSConfig?, token: [UInt8], runID: String, session: Data, timeout: Double) async throws -> ChunkStreamClient {
        let stream: ByteStream = try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { () throws -> ByteStream in
                    let stream = try StreamDialer.dial(url, tls: tls, timeout: .seconds(timeout))
                    var nonce = [UInt8](repeating: 0, count: ChunkStreamFrame.headerBytes + ChunkStreamFrame.nonceBytes)
                    try nonce.withUnsafeMutableBytes { try stream.readExactly(into: $0, timeout: .seconds(timeout)) }
                    let (length, tag) = nonce.withUnsafeBytes { ChunkStreamFrame.parseHeader($0) }
                    guard length == ChunkStreamFrame.nonceBytes, tag == 0 else {
                        throw WorkerError("the chunk stream at \(url) did not open with a nonce (\(length) bytes, tag \(tag))")
                    }
                    let mac = JoinHandshake.streamMAC(token: token, runID: runID, serverNonce: Data(nonce[ChunkStreamFrame.headerBytes...]),
                                                      session: session)
                    let proof = ChunkStreamFrame.header(length: ChunkStreamFrame.attachBytes, tag: 0) + Array(session) + Array(mac)
                    try proof.withUnsafeBytes { try stream.write([$0], timeout: .seconds(timeout)) }
                    return stream
                })
            }
        }
        let client = ChunkStreamClient(stream: stream, writeTimeout: timeout)
        Thread.detachNewThread { [client] in client.writeLoop() }
        Thread.detachNewThread { [client] in client.readLoop() }
        return client
    }

    /// Sends one request (`head ‖ values ‖ tail`) and waits for its answer's bytes, at most
    /// `timeout`.
    func request(head: [UInt8], values: Values, tail: [UInt8], timeout: Double) async throws -> [UInt8] {
        let tag = Mutex<UInt32?>(nil)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[UInt8], any Error>) in
                let failure = state.withLock { s -> (any Error)? in
                    if let failure = s.failure { return failure }
                    // A cancel before the tag was known found nothing to cancel.
                    if Task.isCancelled { return CancellationError() }
                    let t = s.nextTag
                    s.nextTag = t == UInt32.max ? 1 : t + 1
                    s.waiting[t] = (Monotonic.now + timeout, continuation)
                    s.writes.append(Write(tag: t, head: head, values: values.bytes, tail: tail))
                    tag.withLock { $0 = t }
                    return nil
                }
                if let failure { continuation.resume(throwing: failure) } else { wake.signal() }
            }
        } onCancel: {
            guard let t = tag.withLock({ $0 }) else { return }
            state.withLock { $0.waiting.removeValue(forKey: t) }?.continuation.resume(throwing: CancellationError())
        }
    }

    /// The weights of `version` (or newer) that the coordinator writes on the stream for a task
    /// whose reply says so; at most `timeout` seconds.
    func weights(version: UInt64, timeout: Double) async throws -> WeightsBody {
        let key = UInt64.random(in: 1 ... .max)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<WeightsBody, any Error>) in
                let now = state.withLock { s -> Result<WeightsBody, any Error>? in
                    if let failure = s.failure { return .failure(failure) }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if let body = s.weights {
                        s.weights = nil
                        // An older model than the task needs is of no use to anyone: let it go.
                        if body.version >= version { return .success(body) }
                    }
                    s.weightsWaiting.append((version, Monotonic.now + timeout, key, continuation))
                    return nil
                }
                if let now { continuation.resume(with: now) }
            }
        } onCancel: {
            let waiter = state.withLock { s -> CheckedContinuation<WeightsBody, any Error>? in
                guard let i = s.weightsWaiting.firstIndex(where: { $0.key == key }) else { return nil }
                return s.weightsWaiting.remove(at: i).continuation
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    /// Returns once no frame waits to be written or is being written.
    func drain() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.writes.isEmpty, s.writing == 0 { return true }
                s.drained.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// Ends the stream: waiting requests fail with "closed".
    func close() { fail(.closed("close the chunk stream")) }

    private func fail(_ error: NNGError) {
        let (waiting, drained) = state.withLock { s -> ([CheckedContinuation<[UInt8], any Error>], [CheckedContinuation<Void, Never>]) in
            if s.failure == nil { s.failure = error }
            s.writes.removeAll()
            let waiting = s.waiting.values.map(\.continuation)
            s.waiting.removeAll()
            let weightsWaiting = s.weightsWaiting.map(\.continuation)
            s.weightsWaiting.removeAll()
            s.weights = nil
            for w in weightsWaiting { w.resume(throwing: error) }
            let drained = s.writing == 0 ? s.drained : []
            if s.writing == 0 { s.drained.removeAll() }
            return (waiting, drained)
        }
        stream.close()
        wake.signal()
        for w in waiting { w.resume(throwing: error) }
        for d in drained { d.resume() }
    }

    /// Weights that came: to the task that waits for them, or kept for the next one.
    private func arrived(_ body: WeightsBody) {
        let version = body.version
        let taker = state.withLock { s -> CheckedContinuation<WeightsBody, any Error>? in
            if let i = s.weightsWaiting.firstIndex(where: { $0.version <= version }) {
                return s.weightsWaiting.remove(at: i).continuation
            }
            // Frames can come out of version order (two pushes race for the stream): the newest stays.
            if (s.weights?.version ?? 0) <= version { s.weights = body }
            return nil
        }
        taker?.resume(returning: body)
    }

    private func writeLoop() {
        while true {
            wake.wait()
            while let write = state.withLock({ s -> Write? in
                guard s.failure == nil, !s.writes.isEmpty else { return nil }
                s.writing += 1
                return s.writes.removeFirst()
            }) {
                let header = ChunkStreamFrame.header(length: write.head.count + write.values.count + write.tail.count, tag: write.tag)
                var failed: NNGError?
                do {
                    try header.withUnsafeBytes { h in
                        try write.head.withUnsafeBytes { head in
                            try write.tail.withUnsafeBytes { tail in
                                try stream.write([h, head, write.values, tail], timeout: .seconds(writeTimeout))
                            }
                        }
                    }
                } catch let e as NNGError { failed = e } catch { failed = .protocolError("write to the chunk stream: \(error)") }
                let drained = state.withLock { s -> [CheckedContinuation<Void, Never>] in
                    s.writing -= 1
                    guard s.writing == 0, s.writes.isEmpty || s.failure != nil else { return [] }
                    defer { s.drained.removeAll() }
                    return s.drained
                }
                for d in drained { d.resume() }
                if let failed { fail(failed) }
            }
            if state.withLock({ $0.failure != nil }) { return }
        }
    }

    private func readLoop() {
        let capacity = 1 << 16
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 8)
        defer { buffer.deallocate() }
        var filled = 0
        while state.withLock({ $0.failure == nil }) {
            do {
                filled += try stream.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[filled...]), timeout: .milliseconds(100))
            } catch where error.isTimeout {
                // Nothing arrived: only the clock moved.
            } catch {
                fail(error)
                return
            }
            var start = 0
            while filled - start >= ChunkStreamFrame.headerBytes {
                let (length, tag) = ChunkStreamFrame.parseHeader(UnsafeRawBufferPointer(rebasing: buffer[start ..< start + ChunkStreamFrame.headerBytes]))
                if tag == ChunkStreamFrame.weightsTag {
                    guard length >= 8, length <= Self.maxWeightsBytes else {
                        fail(.protocolError("read a weights frame of \(length) bytes on the chunk stream (8 to \(Self.maxWeightsBytes))"))
                        return
                    }
                    // What is buffered, then the rest straight from the stream into the body.
                    let body = WeightsBody(count: length)
                    let have = min(filled - start - ChunkStreamFrame.headerBytes, length)
                    body.bytes.baseAddress!.copyMemory(from: buffer.baseAddress! + start + ChunkStreamFrame.headerBytes, byteCount: have)
                    start += ChunkStreamFrame.headerBytes + have
                    // Given up only when nothing comes for a while: a large model on a slow link
                    // takes as long as it takes.
                    var got = have
                    while got < length {
                        do throws(NNGError) {
                            got += try stream.read(into: UnsafeMutableRawBufferPointer(rebasing: body.bytes[got...]), timeout: .seconds(writeTimeout))
                        } catch {
                            fail(error)
                            return
                        }
                    }
                    arrived(body)
                    continue
                }
                guard length <= capacity - ChunkStreamFrame.headerBytes else {
                    fail(.protocolError("read the chunk stream's answer of \(length) bytes (at most \(capacity - ChunkStreamFrame.headerBytes))"))
                    return
                }
                guard filled - start >= ChunkStreamFrame.headerBytes + length else { break }
                let body = Array(buffer[start + ChunkStreamFrame.headerBytes ..< start + ChunkStreamFrame.headerBytes + length])
                start += ChunkStreamFrame.headerBytes + length
                // An answer to a request that timed out (and was sent again) is not waited for.
                state.withLock { $0.waiting.removeValue(forKey: tag) }?.continuation.resume(returning: body)
            }
            if start > 0 {
                if filled > start { buffer.baseAddress!.copyMemory(from: buffer.baseAddress! + start, byteCount: filled - start) }
                filled -= start
            }
            let now = Monotonic.now
            let late = state.withLock { s -> [CheckedContinuation<[UInt8], any Error>] in
                let tags = s.waiting.filter { $0.value.deadline <= now }.map(\.key)
                return tags.compactMap { s.waiting.removeValue(forKey: $0)?.continuation }
            }
            let lateWeights = state.withLock { s -> [CheckedContinuation<WeightsBody, any Error>] in
                let (due, rest) = (s.weightsWaiting.filter { $0.deadline <= now }, s.weightsWaiting.filter { $0.deadline > now })
                s.weightsWaiting = rest
                return due.map(\.continuation)
            }
            for l in lateWeights { l.resume(throwing: NNGError.timedOut("wait for weights on the chunk stream")) }
            for l in late { l.resume(throwing: NNGError.timedOut("wait for the answer to a chunk on the chunk stream")) }
        }
    }
}
