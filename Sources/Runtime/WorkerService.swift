import Configuration
import Coordination
import Foundation
import Logging
import Models
import Pruning
import Synchronization
import Tasks
import Tensors
import Transport
import Wire

/// A worker: joins the coordinator, computes micro-batch gradients, sends them in chunks.
///
/// It survives a coordinator restart: the dialer reconnects by itself, and a reply saying the
/// session is unknown makes the worker join again. A connection that stays silent through two
/// request timeouts in a row is given up for a fresh one (a link cut can leave it half open, its
/// requests waiting on TCP's backed-off retransmissions for minutes), and the worker joins again.
public final class WorkerService: Sendable {
    public struct Options: Sendable {
        public var connect: String
        public var token: [UInt8]
        public var name: String
        /// Give up when the coordinator has not answered for this long.
        public var patienceSeconds: Double = 120
        public var maxMessageBytes = 512 << 20
        public var requestTimeoutSeconds: Double = 30
        /// This machine's copies of data sets, by name (train, valid, valid_channel), in place of
        /// the coordinator's paths.
        public var dataFolders: [String: String] = [:]
        /// A certificate folder (`csptrain certs init`) for a `tls+tcp://` coordinator: its
        /// `ca.pem`, and `worker.pem`/`worker.key` when present (mutual TLS).
        public var tlsDir: String?
        public init(connect: String, token: [UInt8], name: String) {
            self.connect = connect
            self.token = token
            self.name = name
        }
    }

    public enum Exit: Sendable, Equatable {
        /// The coordinator said the run is over.
        case finished(String)
    }

    let options: Options
    let logger: Logger
    private let tls: TLSConfig?
    private let connection: Mutex<Connection>

    private struct Connection {
        var socket: Socket
        var closed = false
    }

    public init(options: Options, logger: Logger) throws {
        self.options = options
        self.logger = logger
        tls = try TransportSecurity.client(url: options.connect, dir: options.tlsDir, logger: logger)
        connection = Mutex(Connection(socket: try Self.dial(options, tls: tls)))
    }

    private static func dial(_ options: Options, tls: TLSConfig?) throws -> Socket {
        let socket = try Socket(.req)
        // The kernel's keepalive probes end an idle connection whose link was cut; the dialer then reconnects.
        try socket.setKeepAlive(true)
        try socket.dial(options.connect, maxMessageSize: options.maxMessageBytes, tls: tls)
        return socket
    }

    /// The socket requests go out on now (`redial` replaces it).
    var socket: Socket { connection.withLock { $0.socket } }

    /// Closes the connection; a request waiting on it ends with an error.
    public func close() {
        connection.withLock {
            $0.closed = true
            $0.socket.close()
        }
    }

    /// Gives up the current connection for a fresh one. Closing it ends the session on the
    /// coordinator's side too (a session is bound to its connection), which hands back any
    /// micro-batch it held; the caller joins again.
    private func redial() throws {
        // The fresh socket first: should it fail, the old one stays, and the caller's next
        // request tries again on it.
        let fresh = try Self.dial(options, tls: tls)
        try connection.withLock {
            guard !$0.closed else {
                fresh.close()
                throw CancellationError()
            }
            $0.socket.close()
            $0.socket = fresh
        }
    }

    /// Runs until the coordinator says the run is over, or a fatal error.
    public func run() async throws -> Exit {
        var lastContact = Monotonic.now
        // The last answer to a work request or chunk: a join does not move it, so a worker whose
        // joins are answered but whose work never is (a reply too large for the path, a
        // coordinator that answers nothing else) still gives up after its patience.
        var lastWorkAnswer = Monotonic.now
        var backoff = 0.1
        // The run's transport.request_timeout_seconds once a join told it.
        var requestTimeout = options.requestTimeoutSeconds
        while true {
            try Task.checkCancellation()
            do {
                let session = try await join()
                lastContact = Monotonic.now
                backoff = 0.1
                requestTimeout = session.requestTimeoutSeconds
                if let exit = try await work(session, lastContact: &lastContact, lastWorkAnswer: &lastWorkAnswer) { return exit }
            } catch let error as NNGError where error.isTimeout || error.isConnectionRefused {
                let silent = Monotonic.now - lastContact, idle = Monotonic.now - lastWorkAnswer
                if silent > options.patienceSeconds {
                    throw WorkerError("no answer from the coordinator at \(options.connect) for \(Int(silent)) s; giving up (is it running? is the address right?)")
                }
                if idle > options.patienceSeconds {
                    throw WorkerError("the coordinator at \(options.connect) let this worker join but answered no work request for \(Int(idle)) s; giving up (is a reply larger than the path lets through? see the coordinator's log)")
                }
                logger.info("no answer from the coordinator yet; retrying", metadata: ["url": "\(options.connect)", "silent_s": "\(Int(silent))"])
                // A join unanswered through two timeouts may sit on a half-open connection.
                if error.isTimeout, silent >= Self.redialAfter * requestTimeout {
                    logger.info("the join went unanswered through two request timeouts; dialing a fresh connection", metadata: ["url": "\(options.connect)"])
                    try redial()
                }
                try await Task.sleep(for: .seconds(backoff))
                backoff = min(backoff * 2, 2)
            } catch let limit as Overloaded where limit.atJoin {
                // A join refused by a limit (security.max_workers, join attempts per minute): wait, try again.
                logger.warning("the coordinator refused to let this worker join yet: \(limit.reason); trying again in 5 s")
                try await Task.sleep(for: .seconds(5))
            } catch let rejoin as Rejoin {
                logger.info("\(rejoin.reason); joining again", metadata: ["url": "\(options.connect)"])
                // Back off when rejoining keeps failing (a flood of joins, an overloaded coordinator).
                try await Task.sleep(for: .seconds(backoff))
                backoff = min(backoff * 2, 2)
            }
        }
    }

    // MARK: Working

    private func work(_ session: Session, lastContact: inout Double, lastWorkAnswer: inout Double) async throws -> Exit? {
        let layout = session.model.layout
        var parameters = [Float](repeating: 0, count: layout.totalCount)
        var gradient = [Float](repeating: 0, count: session.exchange.totalCount)
        var haveVersion: UInt64 = 0
        let control = try socket.openContext()
        try control.setResendTime(.seconds(session.resendSeconds))
        let senders = try (0 ..< max(1, session.sendWindow)).map { _ in try socket.openContext() }
        for s in senders { try s.setResendTime(.seconds(session.resendSeconds)) }

        // Work requests are numbered, so that the coordinator tells nng's re-send of one (same
        // bytes, same number) from this worker's next request.
        var sequence: UInt64 = 0
        while true {
            try Task.checkCancellation()
            sequence += 1
            var poll = Request()
            poll.header = Csptrain_V1_Header.make(runID: session.runID, session: session.id, sequence: sequence)
            poll.work = Csptrain_V1_WorkRequest.with { $0.weightsVersion = haveVersion }
            // The weights a task carries are decoded from the reply where it arrived.
            let message: Message
            do {
                message = try await control.request(Message(poll.serializedBytes() as [UInt8]),
                                                    timeout: .seconds(session.requestTimeoutSeconds))
            } catch let error as NNGError where error.isTimeout {
                // A busy coordinator (a long projection step): ask again with a new number and
                // the same session, which releases a task the unanswered request may get.
                try keepWaiting(since: lastContact, progress: lastWorkAnswer, timeout: session.requestTimeoutSeconds, error)
                continue
            }
            let (reply, weights) = try message.withUnsafeBytes { raw in
                do { return try Reply.parseLeavingWeights(raw) } catch {
                    throw WorkerError("the coordinator at \(options.connect) sent a reply that does not parse (\(raw.count) bytes): \(error)")
                }
            }
            lastContact = Monotonic.now
            lastWorkAnswer = lastContact
            do { try checkRefusal(reply) } catch is Overloaded {
                try await Task.sleep(for: .milliseconds(100))
                continue
            }
            switch reply.body {
            case let .finished(finished)?:
                logger.info("the coordinator says the run is over: \(finished.reason)")
                return .finished(finished.reason)
            case .wait?:
                continue
            case let .task(task)?:
                if let weights {
                    do {
                        haveVersion = try message.withUnsafeBytes { raw in
                            try WeightsDecoding.decode(raw, range: weights, layout: layout, into: &parameters, current: haveVersion)
                        }
                    } catch {
                        // Part of the copy may be overwritten: ask for the whole model again.
                        logger.warning("the weights in a task do not decode (\(error)); asking for the whole model again")
                        haveVersion = 0
                        continue
                    }
                }
                guard haveVersion == task.weightsVersion else {
                    haveVersion = 0  // ask for the weights again with the next poll
                    continue
                }
                if task.kind == .eval {
                    try await evaluate(task, parameters: parameters, session: session, control: control)
                    lastContact = Monotonic.now
                    continue
                }
                let examples = try task.exampleIndices.map { index in
                    guard let i = Int(exactly: index) else { throw WorkerError("the coordinator sent example index \(index), which is out of range") }
                    return i
                }
                var moments = InputMomentRecorder(sites: session.exchange.sites)
                let lossSum = try parameters.withUnsafeBufferPointer { p in
                    try gradient.withUnsafeMutableBufferPointer { g in
                        let parameterGradient = UnsafeMutableBufferPointer(rebasing: g[0 ..< layout.totalCount])
                        let lossSum = try session.model.lossAndGradient(parameters: p, examples: examples, epoch: Int(task.epoch),
                                                                        gradient: parameterGradient, moments: &moments)
                        moments.write(into: UnsafeMutableBufferPointer(rebasing: g[session.exchange.statisticsRange]), examples: examples.count)
                        return lossSum
                    }
                }
                try await send(gradient: gradient, lossSum: lossSum, task: task, step: reply.header.step,
                               session: session, senders: senders, progress: lastWorkAnswer)
                lastContact = Monotonic.now
                lastWorkAnswer = lastContact
            default:
                throw WorkerError("unexpected reply to a work request: \(String(describing: reply.body))")
            }
        }
    }

    /// Transcribes an evaluation batch and reports its error counts.
    private func evaluate(_ task: Csptrain_V1_Task, parameters: [Float], session: Session, control: Context) async throws {
        let examples = task.exampleIndices.compactMap { Int(exactly: $0) }
        let counts = try parameters.withUnsafeBufferPointer {
            try session.model.evaluate(parameters: $0, set: task.evalSet, examples: examples)
        }
        var request = Request()
        request.header = Csptrain_V1_Header.make(runID: session.runID, session: session.id)
        request.evalResult = Csptrain_V1_EvalResult.with {
            $0.microBatch = task.microBatch
            $0.evalSet = task.evalSet
            $0.weightsVersion = task.weightsVersion
            $0.wordEdits = UInt64(counts.wordEdits)
            $0.words = UInt64(counts.words)
            $0.charEdits = UInt64(counts.characterEdits)
            $0.chars = UInt64(counts.characters)
            $0.utterances = UInt32(counts.utterances)
        }
        try checkRefusal(try await call(request, context: control))
    }

    /// Sends a micro-batch's gradient in chunks, `senders.count` in flight at once. Each chunk's
    /// request is written straight from the gradient into its message.
    private func send(gradient: [Float], lossSum: Double, task: Csptrain_V1_Task, step: UInt64,
                      session: Session, senders: [Context], progress: Double) async throws {
        let encoder = ChunkEncoder(runID: session.runID, session: session.id, step: step, microBatch: Int(task.microBatch),
                                   exampleCount: task.exampleIndices.count, lossSum: lossSum, weightsVersion: task.weightsVersion,
                                   bf16: session.gradientBF16)
        // The coordinator's chunk grid: the same cut it validates chunks against.
        let grid = ChunkGrid(tensors: session.exchange.combined.tensors.map { ($0.offset, $0.count) }, chunkValues: session.chunkValues)
        var pieces: [(tensor: Int, chunk: Int, count: Int, range: Range<Int>)] = []
        for tensor in grid.tensorChunkCounts.indices {
            let count = grid.tensorChunkCounts[tensor]
            for c in 0 ..< count {
                let lo = grid.offset(tensor: tensor, chunk: c)
                pieces.append((tensor, c, count, lo ..< lo + grid.valueCount(tensor: tensor, chunk: c)))
            }
        }
        func message(_ i: Int) throws -> Message {
            let p = pieces[i]
            return try gradient.withUnsafeBufferPointer { g in
                let values = UnsafeBufferPointer(rebasing: g[p.range])
                return try Message(count: encoder.size(tensor: p.tensor, chunk: p.chunk, chunkCount: p.count, values: values.count)) {
                    encoder.write(tensor: p.tensor, chunk: p.chunk, chunkCount: p.count, values: values, into: $0)
                }
            }
        }
        // Each context carries one exchange at a time: a finished exchange hands its context on.
        // A chunk refused for too many requests in flight is sent again after a pause.
        var queue = Array(pieces.indices.reversed())
        var stale = false
        let timeout = Duration.seconds(session.requestTimeoutSeconds)
        var since = Monotonic.now
        try await withThrowingTaskGroup(of: (Result<Reply, NNGError>, Int, Int).self) { group in
            func start(_ slot: Int, after pause: Duration = .zero) throws {
                guard let piece = queue.popLast() else { return }
                let m = try message(piece)
                let sender = senders[slot]
                group.addTask {
                    if pause > .zero { try await Task.sleep(for: pause) }
                    do { return try await (.success(self.parse(sender.request(m, timeout: timeout))), slot, piece) } catch let error as NNGError where error.isTimeout {
                        return (.failure(error), slot, piece)
                    }
                }
            }
            for slot in senders.indices { try start(slot) }
            while let (answer, slot, piece) = try await group.next() {
                guard case let .success(reply) = answer else {
                    // Unanswered: sent again (a chunk delivered twice is acknowledged, not folded twice).
                    if case let .failure(error) = answer {
                        try keepWaiting(since: since, progress: max(progress, since), timeout: session.requestTimeoutSeconds, error)
                    }
                    queue.append(piece)
                    try start(slot)
                    continue
                }
                since = Monotonic.now
                var pause = Duration.zero
                if case let .refusal(refusal)? = reply.body, refusal.code == .notAssigned {
                    stale = true
                } else if case let .refusal(refusal)? = reply.body, refusal.code == .overloaded {
                    queue.append(piece)
                    pause = .milliseconds(50)
                } else {
                    try checkRefusal(reply)
                }
                if case let .ack(ack)? = reply.body, ack.status == .stale { stale = true }
                if !stale { try start(slot, after: pause) }
            }
        }
        if stale { logger.debug("the step moved on while sending (or the micro-batch went to another worker); dropping the rest of micro-batch \(task.microBatch)") }
    }
}

extension WorkerService {
    /// Silence, in request timeouts, after which the connection is given up for a fresh one:
    /// past the first timeout (a busy coordinator: a long projection step answers late), before
    /// the second one ends.
    static let redialAfter = 1.5

    /// After an unanswered request, `lastContact` the last answer (or the first unanswered
    /// request), `progress` the last answer to work (a join's does not count). Past the worker's
    /// patience without progress rethrows `error`: the caller gives up. Through one request
    /// timeout the coordinator may only be busy: logs and returns, and the caller asks again with
    /// the same session. Through two, the connection may be half open (a cut link, a NAT that
    /// forgot it): dials a fresh one and throws `Rejoin`.
    func keepWaiting(since lastContact: Double, progress: Double, timeout: Double, _ error: NNGError) throws {
        let silent = Monotonic.now - lastContact
        guard silent <= options.patienceSeconds, Monotonic.now - progress <= options.patienceSeconds else { throw error }
        if silent >= Self.redialAfter * timeout {
            try redial()
            throw Rejoin(reason: "no answer from the coordinator for \(Int(silent)) s, through two request timeouts; dialed a fresh connection (a cut link can leave the old one half open)")
        }
        logger.warning("no answer from the coordinator for \(Int(silent)) s (busy: a long projection step, a loaded host?); asking again with the same session",
                       metadata: ["url": "\(options.connect)"])
    }
}
