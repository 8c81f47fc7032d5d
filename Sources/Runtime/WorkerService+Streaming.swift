import Coordination
import Foundation
import Tensors
import Transport
import Wire

/// Sending a micro-batch's chunks on the chunk stream (``ChunkStreamClient``): the same chunks,
/// window and answers as on REQ contexts (`send`), written from the gradient where it lies.
extension WorkerService {
    /// Opens the chunk stream the welcome offers, on the host and with the scheme this worker
    /// dialed; nil when none is offered, the values are not sent as they lie (bf16), or it cannot
    /// be opened (said once, and the chunks go as requests).
    func openChunkStream(_ session: Session) async -> ChunkStreamClient? {
        guard session.chunkStreamPort > 0, !session.gradientBF16, let colon = options.connect.lastIndex(of: ":") else { return nil }
        let url = String(options.connect[..<colon]) + ":\(session.chunkStreamPort)"
        do {
            let client = try await ChunkStreamClient.open(url: url, tls: tls, token: options.token, runID: session.runID, session: session.id,
                                                          timeout: min(10, session.requestTimeoutSeconds))
            logger.debug("sending gradient chunks on the chunk stream", metadata: ["url": "\(url)"])
            return client
        } catch {
            logger.warning("could not open the coordinator's chunk stream at \(url): \(error). Sending gradient chunks as requests instead (slower); open TCP port \(session.chunkStreamPort) on the coordinator's host to this worker, or set transport.chunk_stream: false on the coordinator")
            return nil
        }
    }

    /// Sends `plan`'s chunks on `stream`, `window` at once. Nil once the micro-batch is sent (or
    /// the step moved on); otherwise the pieces still to send, when the stream failed (the caller
    /// sends them as requests). Returns only once the stream no longer reads `gradient`.
    func send(_ plan: ChunkPlan, gradient: UnsafeBufferPointer<Float>, stream: ChunkStreamClient, window: Int, progress: Double,
              accepted: AsyncStream<Void>.Continuation, heard: Heard) async throws -> [Int]? {
        var queue = Array(plan.pieces.indices.reversed())
        var unsent: [Int] = []
        var stale = false
        var since = Monotonic.now
        do {
            try await withThrowingTaskGroup(of: (Result<Reply, NNGError>, Int).self) { group in
                func start(after pause: Duration = .zero) throws {
                    guard stream.failure == nil, let piece = queue.popLast() else { return }
                    let p = plan.pieces[piece]
                    guard let (head, tail) = plan.encoder.frame(tensor: p.tensor, chunk: p.chunk, chunkCount: p.count, valueCount: p.range.count) else {
                        unsent.append(piece)
                        return
                    }
                    let values = ChunkStreamClient.Values(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: gradient[p.range])))
                    let timeout = plan.requestTimeoutSeconds
                    group.addTask {
                        if pause > .zero { try await Task.sleep(for: pause) }
                        do {
                            let bytes = try await stream.request(head: head, values: values, tail: tail, timeout: timeout)
                            return (.success(try self.parse(bytes)), piece)
                        } catch let error as NNGError {
                            return (.failure(error), piece)
                        }
                    }
                }
                for _ in 0 ..< max(1, window) { try start() }
                while let (answer, piece) = try await group.next() {
                    let reply: Reply
                    switch answer {
                    case let .failure(error) where error.isTimeout:
                        // Unanswered: sent again (a chunk delivered twice is acknowledged, not folded twice).
                        try keepWaiting(since: since, progress: max(progress, since), timeout: plan.requestTimeoutSeconds, generation: plan.generation, error)
                        queue.append(piece)
                        try start()
                        continue
                    case .failure:
                        unsent.append(piece)
                        continue
                    case let .success(r):
                        reply = r
                    }
                    since = Monotonic.now
                    heard.now()
                    let answer = try chunkAnswered(reply, accepted: accepted)
                    if answer.again { queue.append(piece) }
                    stale = stale || answer.stale
                    if !stale { try start(after: answer.again ? .milliseconds(50) : .zero) }
                }
            }
        } catch {
            // Giving up (the coordinator silent past the patience, a refusal, a cancel): the
            // stream goes too, so that no write of this gradient is left waiting on it.
            stream.close()
            await stream.drain()
            throw error
        }
        await stream.drain()
        if stale {
            logger.debug("the step moved on while sending (or the micro-batch went to another worker); dropping the rest of micro-batch \(plan.microBatch)")
            return nil
        }
        reportFailure(of: stream)
        guard unsent.isEmpty, stream.failure == nil || queue.isEmpty else { return unsent + queue.reversed() }
        return nil
    }

    /// Says once that `stream` failed, whenever that is noticed.
    func reportFailure(of stream: ChunkStreamClient) {
        if let failure = stream.unreportedFailure() {
            logger.warning("the chunk stream to \(stream.peer) failed (\(failure)); sending gradient chunks as requests from now on")
        }
    }

    /// The weights of `version` that a task says come on the chunk stream, decoded into
    /// `parameters`; the version they hold, or nil (said why) when they did not come or do not
    /// decode: the caller asks for the whole model again.
    func streamedWeights(_ version: UInt64, stream: ChunkStreamClient?, layout: ParameterLayout, into parameters: inout [Float],
                         current: UInt64, timeout: Double) async -> UInt64? {
        guard let stream else {
            logger.warning("the coordinator sent weights on a chunk stream this worker does not have; asking for them again")
            return nil
        }
        do {
            let body = try await stream.weights(version: version, timeout: timeout)
            return try WeightsDecoding.decode(UnsafeRawBufferPointer(body.bytes), range: body.message, layout: layout, into: &parameters,
                                              current: current)
        } catch {
            reportFailure(of: stream)
            logger.warning("the weights of version \(version) did not come whole on the chunk stream (\(error)); asking for the whole model again")
            return nil
        }
    }

    func parse(_ bytes: [UInt8]) throws -> Reply {
        do {
            return try bytes.withUnsafeBytes { try Reply.parse($0) }
        } catch {
            throw WorkerError("the coordinator at \(options.connect) sent an answer on the chunk stream that does not parse (\(bytes.count) bytes): \(error)")
        }
    }
}
