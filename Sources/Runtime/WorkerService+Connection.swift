import Foundation
import Logging
import Synchronization
import Transport

/// The worker's connection to the coordinator: dialled, watched, and replaced when it closes
/// or goes silent.
///
/// A session is bound to the connection that joined it, so a closed connection means joining
/// again. The worker does not wait for its socket's dialer to reconnect: it dials a fresh
/// socket at once and closes the old one in the background. That also keeps it clear of a
/// libnng 1.5.2 fault (Debian 12's): a TLS connection whose TCP stream fails while a send is
/// being queued can never be torn down, and from then on the process's nng tears down no
/// connection at all, so the old socket would never reconnect (seen about once in 15
/// coordinator kills over TLS on a loaded machine; scripts/restart-stress.sh). When the old
/// socket's close does not finish within `retireSeconds`, nng in this process is stuck for
/// good, and the worker restarts itself in place (same process ID and arguments).
extension WorkerService {
    struct Connection {
        var socket: Socket
        /// Counts replacements: a request that fails with "closed" under an older generation
        /// was cut by a replacement, not by `close()`.
        var generation = 0
        var closed = false
        /// Sockets replaced and not closed yet (`retireReplacedSockets`).
        var replaced: [Socket] = []
    }

    /// When the worker last heard from the coordinator, shared by an attempt and the loop
    /// that retries it.
    final class Clocks: Sendable {
        struct State {
            /// The last answer of any kind (a join's too).
            var contact: Double
            /// The last answer to a work request or chunk: a join does not move it, so a worker
            /// whose joins are answered but whose work never is (a reply too large for the path,
            /// a coordinator that answers nothing else) still gives up after its patience.
            var workAnswer: Double
            /// The run's transport.request_timeout_seconds once a join told it.
            var requestTimeout: Double
            /// Whether the last attempt joined.
            var joined = false
        }

        let state: Mutex<State>

        init(now: Double, requestTimeout: Double) {
            state = Mutex(State(contact: now, workAnswer: now, requestTimeout: requestTimeout))
        }
    }

    /// The pipe a watched socket is connected through, and its ports.
    final class WatchedPipe: Sendable {
        let connected = Mutex(false)
        let ports = Mutex<ConnectionProbe.Ports?>(nil)
    }

    /// The connection an attempt used was replaced.
    struct ConnectionLost: Error {}

    /// A close of an old socket that takes longer than this means nng is stuck (a healthy
    /// close takes milliseconds, a few hundred on a loaded machine).
    static let retireSeconds = 5.0
    /// Restarts in place after which the worker gives up instead (something else is wrong).
    static let maxRestartsInPlace = 20

    static func dial(_ options: Options, tls: TLSConfig?) throws -> Socket {
        let socket = try Socket(.req)
        // The kernel's keepalive probes end an idle connection whose link was cut.
        try socket.setKeepAlive(true)
        try socket.dial(options.connect, maxMessageSize: options.maxMessageBytes, tls: tls)
        return socket
    }

    /// The socket requests go out on now (`replaceConnection` replaces it).
    var socket: Socket { connection.withLock { $0.socket } }

    var generation: Int { connection.withLock { $0.generation } }

    /// Closes the connection; a request waiting on it ends with an error.
    public func close() {
        let socket = connection.withLock {
            $0.closed = true
            return $0.socket
        }
        // Bounded: a stuck close must not keep a finished worker from exiting.
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            socket.close()
            done.signal()
        }
        if done.wait(timeout: .now() + Self.retireSeconds) == .timedOut {
            logger.warning("nng did not finish closing the connection within \(Int(Self.retireSeconds)) s; exiting without it")
        }
    }

    /// Replaces the connection when its pipe goes away (after it had connected), or when the
    /// kernel no longer lists the pipe's TCP connection for two checks a second apart while
    /// nng still holds it open (`ConnectionProbe`: libnng 1.5.2's TLS layer can miss the end).
    func watch(_ socket: Socket, generation: Int) {
        let current = WatchedPipe()
        Task { [weak self] in
            for await event in socket.pipeEvents {
                switch event.kind {
                case .added:
                    current.ports.withLock { $0 = ConnectionProbe.ports(of: event.pipe) }
                    current.connected.withLock { $0 = true }
                case .removed where current.connected.withLock({ $0 }):
                    current.ports.withLock { $0 = nil }
                    self?.connectionEnded(generation, "the connection to the coordinator closed; dialing a fresh one")
                    return
                default:
                    break
                }
            }
        }
        Task { [weak self] in
            var goneChecks = 0
            while true {
                try? await Task.sleep(for: .seconds(1))
                guard let self, self.generation == generation, !self.connection.withLock({ $0.closed }) else { return }
                guard let ports = current.ports.withLock({ $0 }) else {
                    goneChecks = 0
                    continue
                }
                goneChecks = ConnectionProbe.state(of: ports) == .gone ? goneChecks + 1 : 0
                if goneChecks >= 2 {
                    self.connectionEnded(generation, "the connection to the coordinator (local port \(ports.local), remote port \(ports.remote)) is no longer established in the kernel but nng still holds it open (a libnng 1.5.2 TLS fault); dialing a fresh one")
                    return
                }
            }
        }
    }

    private func connectionEnded(_ generation: Int, _ message: String) {
        guard self.generation == generation, !connection.withLock({ $0.closed }) else { return }
        logger.info("\(message)", metadata: ["url": "\(options.connect)"])
        do { try replaceConnection(from: generation) } catch {
            logger.warning("could not dial a fresh connection (\(error)); the next request tries again")
        }
    }

    /// Gives up the current connection for a fresh one; the attempt using the old one is
    /// cancelled (`whileConnected`) and joins again. The old socket is closed once that attempt
    /// has ended (closing a socket under a context still in use crashes nng 1.5.2), which ends
    /// the session on the coordinator's side too and hands back any micro-batch it held.
    /// `from`: replace only if the connection is still that generation (the watcher's check).
    func replaceConnection(from expected: Int? = nil) throws {
        // The fresh socket first: should it fail, the old one stays, and the next request tries
        // again on it.
        let fresh = try Self.dial(options, tls: tls)
        let generation: Int? = try connection.withLock {
            guard !$0.closed else {
                fresh.close()
                throw CancellationError()
            }
            if let expected, $0.generation != expected { return nil }
            $0.replaced.append($0.socket)
            $0.socket = fresh
            $0.generation += 1
            return $0.generation
        }
        guard let generation else {
            fresh.close()
            return
        }
        watch(fresh, generation: generation)
    }

    /// Runs `body` until it ends or the connection it started on is replaced; then it is
    /// cancelled (its pending requests end at once) and `ConnectionLost` is thrown.
    func whileConnected(_ body: @escaping @Sendable () async throws -> Exit?) async throws -> Exit? {
        let generation = self.generation
        return try await withThrowingTaskGroup(of: Exit?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                // A replacement is rare and needs no faster answer than this.
                while self.generation == generation { try await Task.sleep(for: .milliseconds(50)) }
                throw ConnectionLost()
            }
            defer { group.cancelAll() }
            guard let first = try await group.next() else { return nil }
            return first
        }
    }

    /// Closes the sockets replaced since the last call, in the background. Call when nothing
    /// uses them any more. A close that does not finish within `retireSeconds` means this
    /// process's nng can no longer tear connections down: the worker restarts in place.
    func retireReplacedSockets() {
        let old = connection.withLock { connection in
            defer { connection.replaced = [] }
            return connection.replaced
        }
        for socket in old {
            Task { [logger] in
                guard await !socket.close(waitingAtMost: .seconds(Self.retireSeconds)) else { return }
                Self.restartBecauseNNGIsStuck(logger)
            }
        }
    }

    private static func restartBecauseNNGIsStuck(_ logger: Logger) {
        let count = RestartInPlace.count
        guard count < maxRestartsInPlace else {
            logger.critical("nng could not close the old connection within \(Int(retireSeconds)) s again, after \(count) restarts in place; giving up (see the log above for the connections' errors)")
            exit(EXIT_FAILURE)
        }
        logger.error("nng could not close the old connection within \(Int(retireSeconds)) s: this process's nng can no longer tear connections down (a libnng 1.5.2 TLS fault). Restarting this worker in place (same process ID and arguments); it joins again")
        let reason = RestartInPlace.now()
        logger.critical("could not restart this worker in place: \(reason)")
        exit(EXIT_FAILURE)
    }
}
