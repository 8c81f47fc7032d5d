import Checkpoints
import Configuration
import Foundation
import Tensors
import Logging
import Transport
import Wire

/// The coordinator's I/O shell: a REP socket served through many contexts, pipe notifications,
/// and a timer. Every decision is the CoordinatorCore's.
public final class CoordinatorService: Sendable {
    let core: CoordinatorCore
    let socket: Socket
    let settings: TransportSettings
    let maxRequestBytes: Int
    let logger: Logger
    let folder: RunFolder

    /// `start`: from step 0, or from a checkpoint (see ``RunStart``).
    public init(config: RunConfiguration, runID: String, token: [UInt8], folder: RunFolder, logger: Logger,
                start: RunStart = .fresh, progress: @escaping @Sendable (ProgressEvent) -> Void = { _ in }) throws {
        // The coordinator's BLAS work (folding chunks, the projection) runs on one thread: no
        // spinning, and results that do not depend on a thread count.
        VectorMath.setThreadCount(1)
        core = try CoordinatorCore(config: config, runID: runID, token: token, folder: folder, logger: logger,
                                   start: start, progress: progress)
        socket = try Socket(.rep)
        settings = config.transport
        maxRequestBytes = config.coordinator.chunkValues * 4 + (64 << 10)
        self.logger = logger
        self.folder = folder
    }

    /// Listens on `url` and returns the address workers should dial (port filled in for `:0`).
    /// The address is also written to `<run-dir>/endpoint`.
    public func listen(_ url: String) throws -> String {
        let listener: Listener
        do {
            // Requests are never larger than a gradient chunk plus its envelope.
            listener = try socket.listen(url, maxMessageSize: min(settings.maxMessageBytes, maxRequestBytes))
        } catch where error.isAddressInUse {
            throw RunFolderError("cannot listen on \(url): the address is in use by another process (pick another port, or port 0 for a free one)")
        } catch {
            throw RunFolderError("cannot listen on \(url): \(error)")
        }
        let bound = listener.url
        try? folder.write(bound + "\n", to: folder.endpointFile)
        logger.info("listening", metadata: ["url": "\(bound)"])
        return bound
    }

    /// Ends the run early (Ctrl-C, SIGTERM): a final checkpoint and summary are written.
    public func stop(_ status: RunSummary.Status, message: String) {
        Task { await core.finish(status, message: message) }
    }

    /// Serves until the run ends; returns its summary.
    public func run() async -> RunSummary {
        await core.finishIfAlreadyComplete()
        let summary = await withTaskGroup(of: Void.self) { group in
            for _ in 0 ..< settings.coordinatorContexts {
                guard let context = try? socket.openContext() else { break }
                group.addTask { await self.serve(context) }
            }
            group.addTask {
                for await event in self.socket.pipeEvents where event.kind == .removed {
                    await self.core.pipeClosed(event.pipe.rawValue)
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(100))
                    await self.core.tick()
                }
            }
            let summary = await core.waitUntilFinished()
            // Let members hear that the run is over: idle ones at their next request, busy ones
            // when they finish their micro-batch (at most a step deadline away).
            let lingerUntil = Monotonic.now + min(30, max(3, core.config.coordinator.stepDeadlineSeconds + 1))
            while Monotonic.now < lingerUntil, await !core.everyoneToldFinished {
                try? await Task.sleep(for: .milliseconds(50))
            }
            // Stop serving first, close after: every exchange in flight finishes or is cancelled
            // before the socket (and with it its contexts) goes away. Closing under a context
            // that is still sending made nng panic (pthread_mutex_lock on a freed context).
            group.cancelAll()
            return summary
        }
        socket.close()
        return summary
    }

    private func serve(_ context: Context) async {
        while !Task.isCancelled {
            let message: Message
            do { message = try await context.receive() } catch {
                if error.isClosed || error.isCancelled { return }
                logger.warning("receive failed: \(error)")
                continue
            }
            let reply = await answer(message)
            do {
                try await context.send(WireCodec.message(reply))
            } catch let error as NNGError where error.isClosed {
                return
            } catch {
                logger.warning("could not send a reply: \(error)", metadata: ["peer": "\(socket.peerAddress(message.pipe))"])
            }
        }
    }

    private func answer(_ message: Message) async -> Reply {
        let request: Request
        do {
            request = try message.withUnsafeBytes { try Request(serializedBytes: WireCodec.borrowedData($0)) }
        } catch {
            let peer = socket.peerAddress(message.pipe)
            logger.warning("refused a malformed request (\(message.count) bytes): \(error)", metadata: ["peer": "\(peer)"])
            return WireCodec.refusal(.malformed, "the request is not a valid csptrain.v1.Request (\(message.count) bytes): \(error)",
                                     runID: core.runID, step: 0)
        }
        return await core.handle(request, pipe: message.pipe.rawValue, peer: socket.peerAddress(message.pipe))
    }
}
