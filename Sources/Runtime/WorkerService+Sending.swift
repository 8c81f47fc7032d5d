import Coordination
import Foundation
import Synchronization
import Transport
import Wire

/// Sending a micro-batch's gradient: chunks on the coordinator's grid, `senders.count` in
/// flight at once, each written straight from the gradient into its message.
///
/// The work loop runs a send beside its next steps: once the coordinator has accepted the first
/// chunk (the micro-batch now counts as started and stays with this worker), the loop asks for
/// its next micro-batch and computes that gradient into the other buffer while these chunks are
/// still on their way.
extension WorkerService {
    /// The gradient buffers the work loop alternates between (transport.gradient_buffers: 2, or
    /// 1 where a second copy of the gradient does not fit). A buffer is written only while no
    /// send reads it: the loop awaits the send of one buffer before it computes into that buffer
    /// again, which is what makes handing it to the sending task sound.
    final class GradientBuffers: @unchecked Sendable {
        private let storage: [UnsafeMutableBufferPointer<Float>]
        var count: Int { storage.count }

        init(values: Int, buffers: Int) {
            storage = (0 ..< buffers).map { _ in
                let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: values)
                buffer.initialize(repeating: 0)
                return buffer
            }
        }

        deinit { storage.forEach { $0.deallocate() } }

        subscript(_ index: Int) -> UnsafeMutableBufferPointer<Float> { storage[index] }
    }

    /// What a child of the work loop's group ends with: a micro-batch sent, or a work request
    /// answered or timed out.
    enum Outcome: Sendable {
        case sent
        case answered(Message)
        case unanswered(NNGError)
    }

    /// When a send last heard the coordinator answer one of its chunks: the work loop's patience
    /// counts from it too, so a poll that times out beside a send that is being answered (or was,
    /// until the coordinator started a long projection step) does not take the coordinator for
    /// silent since the task arrived.
    final class Heard: Sendable {
        private let time = Mutex(0.0)
        var last: Double { time.withLock { $0 } }
        func now() { let t = Monotonic.now; time.withLock { $0 = max($0, t) } }
    }

    /// One micro-batch's chunks: what a send needs, apart from the values.
    struct ChunkPlan: Sendable {
        let encoder: ChunkEncoder
        let pieces: [(tensor: Int, chunk: Int, count: Int, range: Range<Int>)]
        let microBatch: UInt32
        let requestTimeoutSeconds: Double
        let generation: Int

        init(session: Session, step: UInt64, microBatch: UInt32, exampleCount: Int, lossSum: Double, weightsVersion: UInt64) {
            encoder = ChunkEncoder(runID: session.runID, session: session.id, step: step, microBatch: Int(microBatch),
                                   exampleCount: exampleCount, lossSum: lossSum, weightsVersion: weightsVersion,
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
            self.pieces = pieces
            self.microBatch = microBatch
            requestTimeoutSeconds = session.requestTimeoutSeconds
            self.generation = session.generation
        }
    }

    /// Sends `gradient` as `plan` cuts it. `accepted` hears once, when the coordinator first
    /// acknowledges a chunk of it, and is finished when the send ends (however it ends).
    /// `progress`: when work was last answered (for the patience of `keepWaiting`).
    /// With a `stream` that works, the chunks go on it (``send(_:gradient:stream:window:progress:accepted:heard:)``),
    /// and as requests only what it could not send.
    func send(_ plan: ChunkPlan, gradient: UnsafeBufferPointer<Float>, senders: [Context], stream: ChunkStreamClient?, progress: Double,
              accepted: AsyncStream<Void>.Continuation, heard: Heard) async throws {
        defer { accepted.finish() }
        var pieces = Array(plan.pieces.indices)
        if let stream { reportFailure(of: stream) }
        if let stream, stream.failure == nil {
            guard let left = try await send(plan, gradient: gradient, stream: stream, window: senders.count, progress: progress,
                                            accepted: accepted, heard: heard) else { return }
            pieces = left
        }
        func message(_ i: Int) throws -> Message {
            let p = plan.pieces[i]
            let values = UnsafeBufferPointer(rebasing: gradient[p.range])
            return try Message(count: plan.encoder.size(tensor: p.tensor, chunk: p.chunk, chunkCount: p.count, values: values.count)) {
                plan.encoder.write(tensor: p.tensor, chunk: p.chunk, chunkCount: p.count, values: values, into: $0)
            }
        }
        // Each context carries one exchange at a time: a finished exchange hands its context on.
        // A chunk refused for too many requests in flight is sent again after a pause.
        var queue = Array(pieces.reversed())
        var stale = false
        let timeout = Duration.seconds(plan.requestTimeoutSeconds)
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
                        try keepWaiting(since: since, progress: max(progress, since), timeout: plan.requestTimeoutSeconds, generation: plan.generation, error)
                    }
                    queue.append(piece)
                    try start(slot)
                    continue
                }
                since = Monotonic.now
                heard.now()
                let answer = try chunkAnswered(reply, accepted: accepted)
                if answer.again { queue.append(piece) }
                stale = stale || answer.stale
                if !stale { try start(slot, after: answer.again ? .milliseconds(50) : .zero) }
            }
        }
        if stale { logger.debug("the step moved on while sending (or the micro-batch went to another worker); dropping the rest of micro-batch \(plan.microBatch)") }
    }

    /// What the coordinator's answer to a chunk means for the send, whichever way the chunk went:
    /// `stale` (the step moved on, or the micro-batch went to another worker: send no more of
    /// it), `again` (refused for too many requests in flight: send it again after a pause). The
    /// first acceptance is told to `accepted`; any other refusal is thrown.
    func chunkAnswered(_ reply: Reply, accepted: AsyncStream<Void>.Continuation) throws -> (stale: Bool, again: Bool) {
        var stale = false, again = false
        if case let .refusal(refusal)? = reply.body, refusal.code == .notAssigned {
            stale = true
        } else if case let .refusal(refusal)? = reply.body, refusal.code == .overloaded {
            again = true
        } else {
            try checkRefusal(reply)
        }
        if case let .ack(ack)? = reply.body {
            if ack.status == .stale { stale = true } else { accepted.yield() }
        }
        return (stale, again)
    }
}
