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
/// It survives a coordinator restart: a session is bound to its connection, so when the
/// connection closes the worker dials a fresh one and joins again (see
/// WorkerService+Connection.swift); a reply saying the session is unknown makes it join again.
/// A connection that stays silent through two request timeouts in a row is given up for a fresh
/// one too (a link cut can leave it half open, its requests waiting on TCP's backed-off
/// retransmissions for minutes).
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
        /// When nng can no longer close an old connection (libnng 1.5.2, see
        /// WorkerService+Connection.swift), re-execute this process in place. Only for a
        /// process that is just this worker (`csptrain worker`), not one that hosts others.
        public var restartInPlaceWhenStuck = false
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
    let tls: TLSConfig?
    let connection: Mutex<Connection>

    public init(options: Options, logger: Logger) throws {
        self.options = options
        self.logger = logger
        tls = try TransportSecurity.client(url: options.connect, dir: options.tlsDir, logger: logger)
        let socket = try Self.dial(options, tls: tls)
        connection = Mutex(Connection(socket: socket))
        watch(socket, generation: 0)
        if RestartInPlace.count > 0 {
            logger.notice("this worker restarted itself in place \(RestartInPlace.count) time(s) (nng could no longer close a connection)")
        }
    }

    /// Runs until the coordinator says the run is over, or a fatal error.
    public func run() async throws -> Exit {
        let clocks = Clocks(now: Monotonic.now, requestTimeout: options.requestTimeoutSeconds)
        var backoff = 0.1
        while true {
            try Task.checkCancellation()
            // Each attempt (a join, then work) lasts while its connection does: a replaced one
            // cancels it, and its socket is closed once nothing uses it any more.
            let generation = self.generation
            do {
                if let exit = try await whileConnected({ try await self.attempt(clocks) }) { return exit }
            } catch let error as NNGError where error.isTimeout || error.isConnectionRefused {
                let last = clocks.state.withLock { $0 }
                if last.joined { backoff = 0.1 }
                try checkPatience(last)
                let silent = Monotonic.now - last.contact
                logger.info("no answer from the coordinator yet; retrying", metadata: ["url": "\(options.connect)", "silent_s": "\(Int(silent))"])
                // A join unanswered through two timeouts may sit on a half-open connection.
                if error.isTimeout, silent >= Self.redialAfter * last.requestTimeout {
                    logger.info("the join went unanswered through two request timeouts; dialing a fresh connection", metadata: ["url": "\(options.connect)"])
                    try replaceConnection(from: generation)
                    retireReplacedSockets()
                }
                try await backOff(&backoff)
            } catch is ConnectionLost {
                // The coordinator restarted, or a link reset: the session was bound to the
                // connection, so join again on the fresh one (within the worker's patience: a
                // coordinator that closes every connection must not keep it forever).
                let last = clocks.state.withLock { $0 }
                if last.joined { backoff = 0.1 }
                try checkPatience(last)
                logger.info("the connection to the coordinator closed; joining again on a fresh one", metadata: ["url": "\(options.connect)"])
                try await backOff(&backoff)
            } catch let limit as Overloaded where limit.atJoin {
                // A join refused by a limit (security.max_workers, join attempts per minute): wait, try again.
                logger.warning("the coordinator refused to let this worker join yet: \(limit.reason); trying again in 5 s")
                try await Task.sleep(for: .seconds(5))
            } catch let rejoin as Rejoin {
                if clocks.state.withLock({ $0.joined }) { backoff = 0.1 }
                logger.info("\(rejoin.reason); joining again", metadata: ["url": "\(options.connect)"])
                // Back off when rejoining keeps failing (a flood of joins, an overloaded coordinator).
                try await backOff(&backoff)
            }
        }
    }

    /// Gives up, past the worker's patience, without any answer or without an answer to work.
    private func checkPatience(_ last: Clocks.State) throws {
        let silent = Monotonic.now - last.contact, idle = Monotonic.now - last.workAnswer
        if silent > options.patienceSeconds {
            throw WorkerError("no answer from the coordinator at \(options.connect) for \(Int(silent)) s; giving up (is it running? is the address right? a projection step longer than that, such as a one-shot reconstruction of a large model, needs a longer --patience)")
        }
        if idle > options.patienceSeconds {
            throw WorkerError("the coordinator at \(options.connect) let this worker join but answered no work request for \(Int(idle)) s; giving up (is a reply larger than the path lets through? see the coordinator's log)")
        }
    }

    /// Waits `backoff` seconds, and doubles it for next time (up to 2 s).
    private func backOff(_ backoff: inout Double) async throws {
        try await Task.sleep(for: .seconds(backoff))
        backoff = min(backoff * 2, 2)
    }

    /// One join and the work that follows it, until the run ends or an error.
    private func attempt(_ clocks: Clocks) async throws -> Exit? {
        clocks.state.withLock { $0.joined = false }
        let session = try await join()
        var (lastContact, lastWorkAnswer) = clocks.state.withLock {
            $0.contact = Monotonic.now
            $0.requestTimeout = session.requestTimeoutSeconds
            $0.joined = true
            return ($0.contact, $0.workAnswer)
        }
        defer { clocks.state.withLock { $0.contact = lastContact; $0.workAnswer = lastWorkAnswer } }
        return try await work(session, lastContact: &lastContact, lastWorkAnswer: &lastWorkAnswer)
    }

    // MARK: Working

    private func work(_ session: Session, lastContact: inout Double, lastWorkAnswer: inout Double) async throws -> Exit? {
        // Receipts for weights that arrived go beside the work; the last one ends before the
        // attempt does (its socket may be closed once nothing uses it).
        let receipts = try ReceiptSender(context: socket.openContext(), session: session)
        do {
            let exit = try await work(session, receipts: receipts, lastContact: &lastContact, lastWorkAnswer: &lastWorkAnswer)
            await receipts.stop()
            return exit
        } catch {
            await receipts.stop()
            throw error
        }
    }

    private func work(_ session: Session, receipts: ReceiptSender, lastContact: inout Double, lastWorkAnswer: inout Double) async throws -> Exit? {
        let layout = session.model.layout
        var parameters = [Float](repeating: 0, count: layout.totalCount)
        let gradients = GradientBuffers(values: session.exchange.totalCount, buffers: session.gradientBuffers)
        let heard = Heard()
        var next = 0  // the buffer the next gradient is computed into
        var haveVersion: UInt64 = 0
        let control = try socket.openContext()
        try control.setResendTime(.seconds(session.resendSeconds))
        let senders = try (0 ..< max(1, session.sendWindow)).map { _ in try socket.openContext() }
        for s in senders { try s.setResendTime(.seconds(session.resendSeconds)) }
        let stream = await openChunkStream(session)
        defer { stream?.close() }

        // At most one micro-batch's chunks are in flight (a child of the group) while the loop
        // asks for the next micro-batch (the other child) and computes it. `accepted` hears when
        // the coordinator holds a chunk of the one in flight: asking for more work before that
        // would hand the micro-batch back as unstarted. A send that fails (a connection given up
        // for a fresh one) ends the wait for the answer at once, with its reason.
        return try await withThrowingTaskGroup(of: Outcome.self) { group in
            var inFlight = false
            var accepted: AsyncStream<Void>?
            func sent() {
                inFlight = false
                lastContact = Monotonic.now
                lastWorkAnswer = lastContact
            }
            /// Waits for the send in flight; only that child runs when this is called.
            func settle() async throws {
                while inFlight, let outcome = try await group.next() {
                    if case .sent = outcome { sent() }
                }
            }
            // Work requests are numbered, so that the coordinator tells nng's re-send of one (same
            // bytes, same number) from this worker's next request.
            var sequence: UInt64 = 0
            while true {
                try Task.checkCancellation()
                if let started = accepted {
                    for await _ in started { break }
                    accepted = nil
                }
                sequence += 1
                var poll = Request()
                poll.header = Csptrain_V1_Header.make(runID: session.runID, session: session.id, sequence: sequence)
                poll.work = Csptrain_V1_WorkRequest.with { $0.weightsVersion = haveVersion }
                let request = try Message(poll.serializedBytes() as [UInt8])
                let timeout = Duration.seconds(session.requestTimeoutSeconds)
                group.addTask {
                    do { return .answered(try await control.request(request, timeout: timeout)) } catch let error as NNGError where error.isTimeout {
                        return .unanswered(error)
                    }
                }
                // The weights a task carries are decoded from the reply where it arrived.
                var answer: Outcome = .sent
                while case .sent = answer, let outcome = try await group.next() {
                    if case .sent = outcome { sent() }
                    answer = outcome
                }
                let message: Message
                switch answer {
                case let .answered(m):
                    message = m
                case let .unanswered(error):
                    // A busy coordinator (a long projection step): ask again with a new number and
                    // the same session, which releases a task the unanswered request may get.
                    // Chunks answered meanwhile count as contact and progress.
                    lastContact = max(lastContact, heard.last)
                    lastWorkAnswer = max(lastWorkAnswer, heard.last)
                    try keepWaiting(since: lastContact, progress: lastWorkAnswer, timeout: session.requestTimeoutSeconds, generation: session.generation, error)
                    continue
                case .sent:
                    preconditionFailure("the request's child always answers")
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
                guard case let .task(task)? = reply.body else {
                    switch reply.body {
                    case let .finished(finished)?:
                        // Chunks still on their way belong to a run that is over: not waited for.
                        group.cancelAll()
                        logger.info("the coordinator says the run is over: \(finished.reason)")
                        return .finished(finished.reason)
                    case .wait?:
                        continue
                    default:
                        throw WorkerError("unexpected reply to a work request: \(String(describing: reply.body))")
                    }
                }
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
                    if weights.count >= WeightsCopies.countedBytes { try await receipts.send(haveVersion) }
                }
                if task.weightsOnStream != 0 {
                    guard let decoded = await streamedWeights(task.weightsOnStream, stream: stream, layout: layout, into: &parameters,
                                                              current: haveVersion, timeout: session.requestTimeoutSeconds) else {
                        haveVersion = 0  // ask for the whole model again (on the stream while it works, else in the reply)
                        continue
                    }
                    haveVersion = decoded
                }
                guard haveVersion == task.weightsVersion else {
                    haveVersion = 0  // ask for the weights again with the next poll
                    continue
                }
                if task.kind == .eval {
                    try await settle()
                    try await evaluate(task, parameters: parameters, session: session, control: control)
                    lastContact = Monotonic.now
                    continue
                }
                let examples = try task.exampleIndices.map { index in
                    guard let i = Int(exactly: index) else { throw WorkerError("the coordinator sent example index \(index), which is out of range") }
                    return i
                }
                // Computed into the buffer no send reads while the last micro-batch's chunks travel
                // (with one buffer, once they have arrived).
                if gradients.count == 1 { try await settle() }
                let gradient = gradients[next]
                var moments = InputMomentRecorder(sites: session.exchange.sites,
                                                  sketchKey: InputMomentRecorder.sketchKey(seed: session.seed, step: reply.header.step,
                                                                                             microBatch: Int(task.microBatch), examples: examples))
                let lossSum = try parameters.withUnsafeBufferPointer { p in
                    let parameterGradient = UnsafeMutableBufferPointer(rebasing: gradient[0 ..< layout.totalCount])
                    let lossSum = try session.model.lossAndGradient(parameters: p, examples: examples, epoch: Int(task.epoch),
                                                                    gradient: parameterGradient, moments: &moments)
                    moments.write(into: UnsafeMutableBufferPointer(rebasing: gradient[session.exchange.statisticsRange]), examples: examples.count)
                    return lossSum
                }
                let plan = ChunkPlan(session: session, step: reply.header.step, microBatch: task.microBatch,
                                     exampleCount: task.exampleIndices.count, lossSum: lossSum, weightsVersion: task.weightsVersion)
                try await settle()
                let (started, signal) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
                let progress = lastWorkAnswer, buffer = next
                group.addTask {
                    try await self.send(plan, gradient: UnsafeBufferPointer(gradients[buffer]), senders: senders, stream: stream, progress: progress,
                                        accepted: signal, heard: heard)
                    return .sent
                }
                inFlight = true
                accepted = started
                next = (next + 1) % gradients.count
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
    func keepWaiting(since lastContact: Double, progress: Double, timeout: Double, generation: Int, _ error: NNGError) throws {
        let silent = Monotonic.now - lastContact
        guard silent <= options.patienceSeconds, Monotonic.now - progress <= options.patienceSeconds else { throw error }
        if silent >= Self.redialAfter * timeout {
            try replaceConnection(from: generation)
            throw Rejoin(reason: "no answer from the coordinator for \(Int(silent)) s, through two request timeouts; dialed a fresh connection (a cut link can leave the old one half open)")
        }
        logger.warning("no answer from the coordinator for \(Int(silent)) s (busy: a long projection step, a loaded host?); asking again with the same session",
                       metadata: ["url": "\(options.connect)"])
    }
}
