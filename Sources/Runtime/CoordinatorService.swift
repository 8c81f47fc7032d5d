import Checkpoints
import Configuration
import Coordination
import Foundation
import Logging
import Observe
import Synchronization
import Tensors
import Transport
import Wire

/// The coordinator's I/O: a REP socket served through many contexts, pipe notifications and the
/// clock's tick. Every decision is the run state machine's (through ``CoordinatorShell``).
public final class CoordinatorService: Sendable {
    let shell: CoordinatorShell
    let socket: Socket
    let settings: TransportSettings
    let security: SecuritySettings
    /// `security.max_connections`, or fewer when the descriptor limit leaves less room.
    let connectionLimit: Int
    /// Chunk streams open at once: a share of the same descriptors (0 without chunk streams).
    let streamLimit: Int
    /// Connections closed at once for the limit (counted on nng's callback thread).
    let refusedConnections = Atomic<Int>(0)
    /// Requests larger than this are refused with a reply naming the limit.
    let maxRequestBytes: Int
    let lingerSeconds: Double
    let logger: Logger
    let folder: RunFolder
    /// Contexts that wait to receive, or hold a large request (a gradient chunk) they received,
    /// at once (see `serve`).
    let receiveGate = AsyncGate(capacity: CoordinatorService.receivingContexts)
    let observeSettings: ObserveSettings
    /// The HTTP endpoint (`observe.http`), started once the coordinator listens.
    private let observe = Mutex<ObserveService?>(nil)
    /// The chunk streams' listener (`transport.chunk_stream`), opened beside the REP socket.
    private let chunkStreams = Mutex<ChunkStreamServer?>(nil)

    /// The live page's address, when `observe.http` is on and serving.
    public var pageURL: String? { observe.withLock { $0?.url } }

    /// `start`: from step 0, or from a checkpoint (see ``RunStart``).
    public init(config: RunConfiguration, runID: String, token: [UInt8], folder: RunFolder, logger: Logger,
                start: RunStart = .fresh, progress: @escaping @Sendable (ProgressEvent) -> Void = { _ in }) throws {
        // The coordinator's BLAS work (the projection) runs on one thread: no spinning, and
        // results that do not depend on a thread count. Block-wise work spreads over cores itself.
        VectorMath.setThreadCount(1)
        shell = try CoordinatorShell(config: config, runID: runID, token: token, folder: folder, logger: logger,
                                     start: start, progress: progress)
        socket = try Socket(.rep)
        settings = config.transport
        security = config.security
        // Every connection holds a descriptor: raise the soft limit as far as the hard one allows,
        // and keep connections from taking the descriptors the run folder's files need.
        let descriptors = ProcessTuning.raiseDescriptorLimit()
        // Chunk streams hold descriptors too: a quarter of what is free, so that a flood of both
        // kinds together cannot take the descriptors the run folder's files need.
        let free = max(2, descriptors - Self.reservedDescriptors)
        streamLimit = config.transport.chunkStream ? max(1, min(config.security.maxConnections, free / 4)) : 0
        connectionLimit = max(1, min(config.security.maxConnections, free - streamLimit))
        if connectionLimit < config.security.maxConnections {
            logger.warning("at most \(connectionLimit) connections (security.max_connections is \(config.security.maxConnections)): the descriptor limit is \(descriptors) (ulimit -n) and \(Self.reservedDescriptors) are kept for files; raise ulimit -Hn to allow more")
        }
        socket.limitConnections(connectionLimit)
        // A worker behind a cut link is noticed by the kernel's keepalive probes too.
        try socket.setKeepAlive(true)
        // A gradient chunk of this run's size plus its envelope, or what the configuration
        // allows if less.
        maxRequestBytes = min(config.transport.maxMessageBytes, shell.chunkValues * 4 + (64 << 10))
        lingerSeconds = min(30, max(3, config.coordinator.stepDeadlineSeconds + 1))
        self.logger = logger
        self.folder = folder
        observeSettings = config.observe
    }

    /// Descriptors kept free of connections: run folder files, checkpoint writes, nng's own, and
    /// the runtime's. Without them the coordinator lost ledger lines and checkpoints, and then
    /// died with SIGILL: libdispatch's worker-pool monitor reads /proc/<tid>/stat of its threads every
    /// second and crashes on purpose ("workq: registered worker exited prematurely") when the open
    /// fails, as it does with EMFILE (issue 12).
    static let reservedDescriptors = 128

    /// Listens on `url` and returns the address workers should dial (port filled in for `:0`).
    /// The address is also written to `<run-dir>/endpoint`.
    public func listen(_ url: String) throws -> String {
        let listener: Listener
        let tls = try TransportSecurity.server(url: url, settings: settings.tls, logger: logger)
        do {
            // nng itself cuts messages past twice the limit (closing the connection); up to
            // that, the coordinator reads them and answers with a refusal that names the limit.
            listener = try socket.listen(url, maxMessageSize: 2 * maxRequestBytes, tls: tls)
        } catch where error.isAddressInUse {
            throw RunFolderError("cannot listen on \(url): the address is in use by another process (pick another port, or port 0 for a free one)")
        } catch {
            throw RunFolderError("cannot listen on \(url): \(error)")
        }
        let bound = listener.url
        if settings.chunkStream, bound.hasPrefix("tcp://") || TLSConfig.isTLS(bound) {
            do {
                let streams = try ChunkStreamServer(beside: bound, port: settings.chunkStreamPort, tls: tls, shell: shell,
                                                    maxRequestBytes: maxRequestBytes, limit: streamLimit,
                                                    attachSeconds: min(30, security.silentConnectionSeconds), logger: logger)
                chunkStreams.withLock { $0 = streams }
            } catch {
                socket.close()
                throw error
            }
        }
        try? folder.write(bound + "\n", to: folder.endpointFile)
        let streamPort = chunkStreams.withLock { $0?.port }
        logger.info("listening", metadata: ["url": "\(bound)", "max_request_bytes": "\(maxRequestBytes)",
                                            "chunk_stream_port": "\(streamPort.map { "\($0)" } ?? "none")"])
        if let observer = shell.observer {
            do {
                let service = try ObserveService(settings: observeSettings, observer: observer, logger: logger, clock: { Monotonic.now })
                observe.withLock { $0 = service }
                try? folder.write(service.url + "\n", to: folder.pageFile)
            } catch {
                socket.close()
                throw RunFolderError("\(error)")
            }
        }
        return bound
    }

    /// Prepares the run folder for this start (call once listening: a start that fails before
    /// has not touched the folder's existing files).
    public func openRunFolder() async throws {
        try await shell.openRunFolder()
    }

    /// Closes the socket of a service that never ran (a start abandoned after listening).
    public func close() {
        stopObserving()
        socket.close()
    }

    private func stopObserving() {
        observe.withLock { $0?.stop(); $0 = nil }
        chunkStreams.withLock { $0?.stop(); $0 = nil }
    }

    /// Ends the run early (Ctrl-C, SIGTERM): a final checkpoint and summary are written.
    public func stop(_ status: RunSummary.Status, message: String) {
        Task { await shell.stop(status, message: message) }
    }

    /// Serves until the run ends; returns its summary.
    public func run() async -> RunSummary {
        await shell.start()
        if let streams = chunkStreams.withLock({ $0 }) {
            await shell.offerChunkStream(port: streams.port)
            streams.start()
        }
        let summary = await withTaskGroup(of: Void.self) { group in
            for _ in 0 ..< settings.coordinatorContexts {
                guard let context = try? socket.openContext() else { break }
                group.addTask { await self.serve(context) }
            }
            group.addTask {
                for await event in self.socket.pipeEvents {
                    switch event.kind {
                    case .added: await self.shell.pipeOpened(event.pipe.rawValue)
                    case .removed:
                        self.chunkStreams.withLock { $0 }?.closeStreams(of: event.pipe.rawValue)
                        await self.shell.pipeClosed(event.pipe.rawValue)
                    case .refused: self.refusedConnections.add(1, ordering: .relaxed)
                    }
                }
            }
            group.addTask {
                // The clock's only reader for decisions: deadlines, held requests, silence.
                var refused = RefusalLog(every: 10), silent = RefusalLog(every: 10)
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(100))
                    // Off the actor: copies end and waiting replies go on while it applies a step.
                    self.shell.weightsCopies.expire()
                    let closing = await self.shell.tick()
                    for pipe in closing { self.socket.closePipe(PipeID(rawValue: pipe)) }
                    let now = Monotonic.now
                    if let count = refused.due(now: now, total: self.refusedConnections.load(ordering: .relaxed)) {
                        self.logger.warning("closed \(count) new connection(s) at once: \(self.connectionLimit) are open (security.max_connections = \(self.security.maxConnections)\(self.connectionLimit < self.security.maxConnections ? ", lowered to fit the descriptor limit" : ""))")
                    }
                    if let count = silent.due(now: now, total: silent.total + closing.count) {
                        self.logger.warning("closed \(count) connection(s) that sent nothing for \(self.security.silentConnectionSeconds) s (security.silent_connection_seconds)")
                    }
                }
            }
            let summary = await shell.waitUntilFinished()
            // Let members hear that the run is over: idle ones at their next request, busy ones
            // when they finish their micro-batch (at most a step deadline away).
            let lingerUntil = Monotonic.now + lingerSeconds
            while Monotonic.now < lingerUntil, await !shell.everyoneToldFinished {
                try? await Task.sleep(for: .milliseconds(50))
            }
            // Stop serving first, close after: every exchange in flight finishes or is cancelled
            // before the socket (and with it its contexts) goes away. Closing under a context
            // that is still sending made nng panic (pthread_mutex_lock on a freed context).
            // Nobody waits for a turn to copy weights any more: each send finishes or fails.
            shell.weightsCopies.admitAll()
            chunkStreams.withLock { $0 }?.stop()
            group.cancelAll()
            return summary
        }
        // Bounded: libnng 1.5.2 can hang forever closing a TLS connection whose peer died
        // mid-send (see Socket.close(waitingAtMost:)); the checkpoints and the summary must
        // not wait on it.
        if await !socket.close(waitingAtMost: .seconds(10)) {
            logger.warning("nng did not finish closing the coordinator's connections within 10 s (a libnng 1.5.2 TLS fault); finishing the run without waiting for it")
        }
        await shell.flushCheckpoints()
        stopObserving()
        let copies = shell.weightsCopies.counts
        if copies.expired > 0 || copies.uncounted > 0 || copies.waitedOut > 0 {
            logger.notice("model copies outside the memory bound: \(copies.expired) counted until transport.request_timeout_seconds passed without a sign they arrived (workers that send no WeightsReceipt, or slow links), \(copies.uncounted) sent uncounted while \(settings.coordinatorContexts / 2) replies waited their turn (more workers asking at once than half of transport.coordinator_contexts), \(copies.waitedOut) sent uncounted after waiting a third of that timeout for their turn (copies that went to requests their workers had given up on, as after a projection step longer than the timeout)")
        }
        return summary
    }

    /// Contexts in `receive` (or holding a large request) at once. nng hands a message that
    /// arrives to any context waiting in `receive`; with all 128 waiting, every worker's whole
    /// send window of 1 MiB chunks was taken in at once and waited for the shell (8 workers:
    /// 32 MiB). With a few waiting, the rest stays in the kernel's socket buffers (at most one
    /// message per connection is read ahead by nng), and requests that wait long in the shell
    /// (work requests held for the next step) take no place: small requests leave the gate as
    /// soon as they are read.
    static let receivingContexts = 4
    /// Requests up to this size leave the receive gate as soon as they are read (every request
    /// but gradient chunks and statistics is far smaller); larger ones once the shell has taken
    /// them in (a chunk folded), so a padded work request held for the next step holds no place.
    static let smallRequestBytes = 64 << 10

    private func serve(_ context: Context) async {
        let copies = shell.weightsCopies
        while !Task.isCancelled {
            guard let (answered, request, peer, pipe) = await receiveAndAnswer(context) else { return }
            var frame = answered
            // A model for a worker with a chunk stream goes on the stream, written from the
            // version's frame itself: no copy into a message, nothing to count.
            if let weights = frame.weights, let streamHead = frame.streamHead, weights.bytes.count >= WeightsCopies.countedBytes,
               let streams = chunkStreams.withLock({ $0 }), await streams.pushWeights(weights, pipe: pipe) {
                frame = ReplyFrame(head: streamHead, weights: nil)
                shell.observer?.replySent(bytes: weights.bytes.count)
                await shell.weightsWentOnStream()
            }
            // A reply that carries a model is copied into its message only when few other copies
            // exist, and its copy counts until the worker shows it arrived (``WeightsCopies``):
            // memory holds the version's frame and at most `weightsCopiesAtOnce` copies of it,
            // however many workers ask at once. Small ones (a sparse delta) go at once.
            var ticket: WeightsCopies.Ticket?
            if let weights = frame.weights, weights.bytes.count >= WeightsCopies.countedBytes {
                // Half the contexts at most wait their turn: the others receive the receipts.
                ticket = await copies.enter(pipe: pipe, version: weights.version, maxWaiting: settings.coordinatorContexts / 2)
            }
            do {
                try await context.send(Message(count: frame.count) { frame.write(into: $0) })
            } catch let error as NNGError where error.isClosed {
                if let ticket { copies.release(ticket) }
                return
            } catch {
                if let ticket { copies.release(ticket) }
                logger.warning("could not send a reply: \(error)", metadata: ["peer": "\(peer)"])
            }
            shell.observer?.replySent(bytes: frame.count)
            if let request { await shell.replySent(request) }
        }
    }

    /// Receives one request through the receive gate and answers it; the request's message is
    /// released when this returns, before the reply is sent. Nil once the socket closes or the
    /// task is cancelled.
    private func receiveAndAnswer(_ context: Context) async -> (ReplyFrame, RequestID?, String, UInt32)? {
        while true {
            await receiveGate.enter()
            if Task.isCancelled {
                receiveGate.leave()
                return nil
            }
            let message: Message
            do { message = try await context.receive() } catch {
                receiveGate.leave()
                if error.isClosed || error.isCancelled { return nil }
                logger.warning("receive failed: \(error)")
                continue
            }
            let large = message.count > Self.smallRequestBytes
            if !large { receiveGate.leave() }
            let peer = socket.peerAddress(message.pipe)
            if message.count > maxRequestBytes {
                logger.warning("refused a request of \(message.count) bytes: the limit is \(maxRequestBytes)", metadata: ["peer": "\(peer)"])
                if large { receiveGate.leave() }
                return (await shell.refuse(.tooLarge, "the request has \(message.count) bytes; this coordinator accepts at most \(maxRequestBytes) (a gradient chunk of this run's \(shell.chunkValues) values, see coordinator.chunk_values, plus 64 KiB, capped by transport.max_message_bytes)"), nil, peer, message.pipe.rawValue)
            }
            // Decoded here, off the shell's actor: a chunk's values are checked (finite, within
            // float32 once weighted) on this context's task, so the actor only accounts and
            // folds, and contexts check chunks in parallel.
            let decoded: DecodedRequest
            do { decoded = try message.withUnsafeBytes { try RequestDecoding.decode($0) } } catch {
                logger.warning("refused a malformed request: \(error)", metadata: ["peer": "\(peer)"])
                if large { receiveGate.leave() }
                return (await shell.refuseMalformed(message, reason: "\(error)"), nil, peer, message.pipe.rawValue)
            }
            // A copy of the weights that the request shows arrived no longer counts, also while
            // the actor is busy applying a step.
            if let version = decoded.inbound.weightsVersionShown { shell.weightsCopies.arrived(pipe: message.pipe.rawValue, version: version) }
            let gate = receiveGate
            let (frame, request) = await shell.answer(message, decoded: decoded, peer: peer, read: {
                if large { gate.leave() }
            })
            return (frame, request, peer, message.pipe.rawValue)
        }
    }
}

/// Says when to log a repeated refusal: at once, then at most one line every `every` seconds
/// with how many happened since (a flood must not flood the log too).
struct RefusalLog {
    let every: Double
    private var last = -Double.infinity
    /// Refusals so far, and how many of them a line has reported.
    private(set) var total = 0
    private var reported = 0

    init(every: Double) { self.every = every }

    /// `total`: refusals so far; returns how many to report when a line is due.
    mutating func due(now: Double, total: Int) -> Int? {
        self.total = total
        guard total > reported, now - last >= every else { return nil }
        defer { reported = total; last = now }
        return total - reported
    }
}
