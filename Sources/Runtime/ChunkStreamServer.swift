import Coordination
import Dispatch
import Foundation
import Logging
import Synchronization
import Transport
import Wire

/// A request's bytes and the connection it counts as coming from; the bytes are valid only
/// until the call that receives them returns.
struct ReceivedRequest: @unchecked Sendable {
    let pipe: UInt32
    let bytes: UnsafeRawBufferPointer
    /// A chunk stream's frame, rather than a request on the REP socket.
    let onStream: Bool
}

/// The coordinator's end of the chunk streams (Proto/README.md, "The chunk stream"): each worker
/// may open one byte stream beside its REQ connection and send its gradient chunks on it as
/// frames. A frame is read straight into a buffer the stream reuses, checked and folded where it
/// lies, and answered on the same stream, so a chunk costs no message of nng's (allocated and
/// zeroed for each chunk), no copy into one on the worker, and no hops through the REP socket's
/// contexts. Everything the state machine decides about a chunk is decided as for a chunk that
/// came as a request: the stream only counts as its member's own connection once it proves, with
/// the run's token, which member it belongs to.
///
/// Each stream is read on a thread of its own (its calls block), and at most `limit` are open.
final class ChunkStreamServer: Sendable {
    private let listener: StreamListener
    private let shell: CoordinatorShell
    private let maxRequestBytes: Int
    private let limit: Int
    private let attachSeconds: Double
    private let logger: Logger
    /// Open streams by a number of their own, with the member connection each speaks for once
    /// attached, and the lock its writers take (answers on its thread, weights from others).
    private let open = Mutex<(next: Int, streams: [Int: (stream: ByteStream, pipe: UInt32?, writing: NSLock)], stopped: Bool)>((0, [:], false))
    /// Streams with a weights frame being written: at most one each; another model for the same
    /// worker meanwhile goes in its reply (queued pushes would hold the stream's answers).
    private let pushing = Mutex<Set<ObjectIdentifier>>([])
    private let refusedLog = Mutex(RefusalLog(every: 10))
    private let refused = Atomic<Int>(0)
    /// Streams closed before they proved a member, by reason: logged at once, then at most
    /// once every 10 s with a count (a flood must not flood the log).
    private let unproven = Mutex<[String: (log: RefusalLog, count: Int)]>([:])

    /// The port workers dial (the host and scheme are the REP socket's).
    var port: Int { Int(listener.url.split(separator: ":").last ?? "") ?? 0 }

    /// Listens on `url`'s host and scheme at `port` (0: a free one).
    init(beside url: String, port: Int, tls: TLSConfig?, shell: CoordinatorShell, maxRequestBytes: Int, limit: Int,
         attachSeconds: Double, logger: Logger) throws {
        guard let colon = url.lastIndex(of: ":") else { throw RunFolderError("cannot open a chunk stream beside \(url): no port in the address") }
        let address = url[..<colon] + ":\(port)"
        do { listener = try StreamListener(String(address), tls: tls) } catch {
            throw RunFolderError("cannot listen for chunk streams on \(address) (transport.chunk_stream_port; 0 picks a free port, transport.chunk_stream: false sends chunks as requests): \(error)")
        }
        self.shell = shell
        self.maxRequestBytes = maxRequestBytes
        self.limit = limit
        self.attachSeconds = attachSeconds
        self.logger = logger
    }

    /// Starts accepting on a thread of its own.
    func start() {
        Thread.detachNewThread { [self] in
            while true {
                let stream: ByteStream
                do throws(NNGError) { stream = try listener.accept() } catch {
                    if error.isClosed { return }
                    logger.warning("could not accept a chunk stream: \(error)")
                    Thread.sleep(forTimeInterval: 0.1)  // a lasting fault must not spin
                    continue
                }
                guard let number = admit(stream) else {
                    stream.close()
                    let total = refused.add(1, ordering: .relaxed).newValue
                    if let count = refusedLog.withLock({ $0.due(now: Monotonic.now, total: total) }) {
                        logger.warning("closed \(count) chunk stream(s) at once: \(limit) are open (a quarter of the descriptors left for connections, at most security.max_connections)")
                    }
                    continue
                }
                Thread.detachNewThread { [self] in
                    serve(stream, number: number)
                    _ = open.withLock { $0.streams.removeValue(forKey: number) }
                }
            }
        }
    }

    /// Stops accepting and closes every stream.
    func stop() {
        listener.close()
        let streams = open.withLock { state -> [ByteStream] in
            state.stopped = true
            return state.streams.values.map(\.stream)
        }
        streams.forEach { $0.close() }
    }

    /// The member that joined on `pipe` has gone: its stream goes too.
    func closeStreams(of pipe: UInt32) {
        let streams = open.withLock { $0.streams.values.filter { $0.pipe == pipe }.map(\.stream) }
        streams.forEach { $0.close() }
    }

    /// Writes `weights` on the stream of the member that joined on `pipe`, on a thread of its
    /// own, straight from the frame every reply shares (no copy); whether it was written. A
    /// stream that cannot take it within the answer timeout is closed.
    func pushWeights(_ weights: WeightsFrame, pipe: UInt32) async -> Bool {
        guard let (stream, writing) = open.withLock({ state in
            state.streams.values.first { $0.pipe == pipe }.map { ($0.stream, $0.writing) }
        }), pushing.withLock({ $0.insert(ObjectIdentifier(stream)).inserted }) else { return false }
        let timeout = attachSeconds
        return await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            Thread.detachNewThread {
                let prefix = ChunkStreamFrame.weightsPrefix(version: weights.version, count: weights.bytes.count)
                writing.lock()
                let failure = prefix.withUnsafeBytes { p in
                    weights.bytes.withUnsafeBytes { w -> NNGError? in
                        do throws(NNGError) { try stream.write([p, w], timeout: .seconds(timeout)) } catch { return error }
                        return nil
                    }
                }
                // Closed before another writer can put a frame after a partly written one.
                if failure != nil { stream.close() }
                writing.unlock()
                self.pushing.withLock { _ = $0.remove(ObjectIdentifier(stream)) }
                continuation.resume(returning: failure == nil)
            }
        }
    }

    private func admit(_ stream: ByteStream) -> Int? {
        open.withLock { state in
            guard !state.stopped, state.streams.count < limit else { return nil }
            state.next += 1
            state.streams[state.next] = (stream, nil, NSLock())
            return state.next
        }
    }

    /// One stream, from its proof to its end.
    private func serve(_ stream: ByteStream, number: Int) {
        let peer = stream.peer
        guard let (pipe, name) = attach(stream) else {
            stream.close()
            return
        }
        guard let writing = open.withLock({ $0.streams[number]?.writing }) else { return }
        // One stream per member: an older one (a worker that opened another) is closed.
        let older = open.withLock { state -> [ByteStream] in
            state.streams[number]?.pipe = pipe
            return state.streams.filter { $0.key != number && $0.value.pipe == pipe }.map(\.value.stream)
        }
        older.forEach { $0.close() }
        // The member may have gone while it attached.
        guard Self.blocking({ await self.shell.isMemberConnection(pipe) }) else {
            stream.close()
            return
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ChunkStreamFrame.headerBytes + maxRequestBytes, alignment: 16)
        defer { buffer.deallocate() }
        // A request's in-flight count ends once its answer is written; it is told to the shell
        // with the next frame's answer (one trip to the actor per chunk), or when the stream ends.
        var lastRequest: RequestID?
        defer { if let lastRequest { Task { await self.shell.replySent(lastRequest) } } }
        while true {
            let header = UnsafeMutableRawBufferPointer(rebasing: buffer[0 ..< ChunkStreamFrame.headerBytes])
            do throws(NNGError) { try stream.readExactly(into: header) } catch {
                // A worker that leaves, or whose connection goes, ends its stream: nothing to report.
                logger.debug("chunk stream of worker '\(name)' ended: \(error)", metadata: ["peer": "\(peer)"])
                return
            }
            let (length, tag) = ChunkStreamFrame.parseHeader(UnsafeRawBufferPointer(header))
            guard length <= maxRequestBytes, tag != 0 else {
                logger.warning("closed the chunk stream of worker '\(name)': a frame of \(length) bytes with tag \(tag) (at most \(maxRequestBytes) bytes, tags from 1); its chunks go as requests from now on",
                               metadata: ["peer": "\(peer)"])
                stream.close()
                return
            }
            // The body at offset 8 of a 16-aligned buffer: its floats keep the 4-byte alignment the encoder gave them.
            let body = UnsafeMutableRawBufferPointer(rebasing: buffer[ChunkStreamFrame.headerBytes ..< ChunkStreamFrame.headerBytes + length])
            do throws(NNGError) { try stream.readExactly(into: body, timeout: .seconds(attachSeconds)) } catch {
                logger.warning("chunk stream of worker '\(name)' ended inside a frame: \(error)", metadata: ["peer": "\(peer)"])
                stream.close()
                return
            }
            let frame = answer(UnsafeRawBufferPointer(body), pipe: pipe, peer: peer, previous: lastRequest)
            lastRequest = frame.request
            // The answer framed in one buffer: its header, then the reply written in place.
            let count = frame.reply.count
            var out = ChunkStreamFrame.header(length: count, tag: tag)
            out.append(contentsOf: repeatElement(0, count: count))
            out.withUnsafeMutableBytes { frame.reply.write(into: UnsafeMutableRawBufferPointer(rebasing: $0[ChunkStreamFrame.headerBytes...])) }
            let failure = out.withUnsafeBytes { bytes -> NNGError? in
                writing.lock()
                defer { writing.unlock() }
                do throws(NNGError) { try stream.write([bytes], timeout: .seconds(attachSeconds)) } catch {
                    stream.close()  // before another writer can follow a partly written frame
                    return error
                }
                return nil
            }
            if let error = failure {
                if !error.isClosed { logger.info("could not answer on the chunk stream of worker '\(name)': \(error)", metadata: ["peer": "\(peer)"]) }
                return
            }
            shell.observer?.replySent(bytes: count)
        }
    }

    /// Decodes and answers one frame's request; `previous`: the request this stream answered
    /// last, which no longer counts as in flight.
    private func answer(_ body: UnsafeRawBufferPointer, pipe: UInt32, peer: String, previous: RequestID?) -> (reply: ReplyFrame, request: RequestID?) {
        let decoded: DecodedRequest
        do { decoded = try RequestDecoding.decode(body) } catch {
            logger.warning("refused a malformed chunk frame: \(error)", metadata: ["peer": "\(peer)"])
            return (refuse("\(error)", previous: previous), nil)
        }
        guard case .chunk = decoded.inbound else {
            return (refuse("only gradient chunks travel on a chunk stream; send other requests on the REQ socket", previous: previous), nil)
        }
        if let version = decoded.inbound.weightsVersionShown { shell.weightsCopies.arrived(pipe: pipe, version: version) }
        let request = ReceivedRequest(pipe: pipe, bytes: body, onStream: true)
        let answered = Self.blocking {
            if let previous { await self.shell.replySent(previous) }
            return await self.shell.answer(request, decoded: decoded, peer: peer)
        }
        return (answered.frame, answered.request)
    }

    private func refuse(_ reason: String, previous: RequestID?) -> ReplyFrame {
        Self.blocking {
            if let previous { await self.shell.replySent(previous) }
            return await self.shell.refuse(.malformed, reason)
        }
    }

    /// Logs why a stream was closed before it proved a member: the first of each kind at once,
    /// then a count at most every 10 s.
    private func closedUnproven(_ kind: String, _ message: String, peer: String) {
        let due = unproven.withLock { state -> Int? in
            var entry = state[kind] ?? (RefusalLog(every: 10), 0)
            entry.count += 1
            let due = entry.log.due(now: Monotonic.now, total: entry.count)
            state[kind] = entry
            return due
        }
        if let due {
            logger.warning("\(message)\(due > 1 ? " (\(due) streams since the last such line)" : "")", metadata: ["peer": "\(peer)"])
        }
    }

    /// Sends the nonce, reads the proof; the member it proves, or nil (logged).
    private func attach(_ stream: ByteStream) -> (UInt32, String)? {
        let nonce = randomBytes(ChunkStreamFrame.nonceBytes)
        var proof = [UInt8](repeating: 0, count: ChunkStreamFrame.headerBytes + ChunkStreamFrame.attachBytes)
        do {
            let header = ChunkStreamFrame.header(length: nonce.count, tag: 0)
            try header.withUnsafeBytes { h in
                try nonce.withUnsafeBytes { try stream.write([h, $0], timeout: .seconds(attachSeconds)) }
            }
            try proof.withUnsafeMutableBytes { try stream.readExactly(into: $0, timeout: .seconds(attachSeconds)) }
        } catch {
            closedUnproven("late", "closed a chunk stream that did not attach within \(attachSeconds) s: \(error)", peer: stream.peer)
            return nil
        }
        let (length, tag) = proof.withUnsafeBytes { ChunkStreamFrame.parseHeader($0) }
        let body = Data(proof[ChunkStreamFrame.headerBytes...])
        guard length == ChunkStreamFrame.attachBytes, tag == 0 else {
            closedUnproven("not a proof", "closed a chunk stream whose first frame is not a proof (\(length) bytes, tag \(tag))", peer: stream.peer)
            return nil
        }
        let session = body.prefix(ChunkStreamFrame.sessionBytes), mac = body.suffix(ChunkStreamFrame.macBytes)
        guard let member = Self.blocking({ await self.shell.streamMember(session: Data(session), serverNonce: nonce, mac: Data(mac)) }) else {
            closedUnproven("no member", "closed a chunk stream whose proof matches no member of this run (a worker of another run or token, or one dropped meanwhile)",
                           peer: stream.peer)
            return nil
        }
        return member
    }

    /// Runs `body` on Swift's executors and waits for it on this (non-cooperative) thread.
    private static func blocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
        let result = Mutex<T?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            let value = await body()
            result.withLock { $0 = value }
            done.signal()
        }
        done.wait()
        return result.withLock { $0! }
    }
}
