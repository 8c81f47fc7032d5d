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
/// connection at all, so the old socket would never reconnect (3 of 37 coordinator kills over TLS
/// on a loaded machine left a worker that never rejoined; scripts/restart-stress.sh). When the old
/// socket's close does not finish within `retireSeconds`, nng in this process is stuck for
/// good, and the worker restarts itself in place (same process ID and arguments).
extension WorkerService {
    struct Connection {
        var socket: Socket
        /// Counts replacements: an attempt runs while the generation it began on lasts
        /// (`whileConnected`), and a replacement asked for by an attempt applies only to its own.
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

    /// The pipe a watched socket is connected through, shared by the event watcher and the
    /// kernel probe: its ports (nil: none, or not TCP) and whether the kernel was seen to list
    /// it as established.
    final class WatchedPipe: Sendable {
        struct State {
            var ports: ConnectionProbe.Ports?
            var seenOpen = false
        }

        let state = Mutex(State())
    }

    /// The connection an attempt used was replaced.
    struct ConnectionLost: Error {}

    /// A close of an old socket that takes longer than this means nng is stuck (a healthy
    /// close takes milliseconds, a few hundred on a loaded machine).
    static let retireSeconds = 5.0
    /// Restarts in place within an hour after which the worker gives up instead (something
    /// else is wrong).
    static let maxRestartsInPlacePerHour = 20

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

    /// Closes the connection and any replaced one not closed yet; a request waiting on them
    /// ends with an error. Bounded: a stuck close must not keep a finished worker from exiting.
    public func close() async {
        let sockets = connection.withLock { connection in
            connection.closed = true
            defer { connection.replaced = [] }
            return [connection.socket] + connection.replaced
        }
        for socket in sockets where await !socket.close(waitingAtMost: .seconds(Self.retireSeconds)) {
            logger.warning("nng did not finish closing a connection within \(Int(Self.retireSeconds)) s; going on without it")
        }
    }

    /// Replaces the connection when its pipe goes away (after it had connected), or, over TLS,
    /// when the kernel no longer lists the pipe's TCP connection as established for two checks
    /// a second apart while nng still holds it open (`ConnectionProbe`: libnng 1.5.2's TLS
    /// layer can miss the end; plain TCP does not). The kernel is asked at once when the pipe
    /// is added, so a connection killed within its first second is still known to have been
    /// open; one listed as closing (the peer's FIN arrived) counts even if never seen open, and
    /// one not listed at all counts only once seen open, so a kernel whose tables list nothing
    /// (a sandbox) never triggers the probe.
    func watch(_ socket: Socket, generation: Int) {
        let current = WatchedPipe()
        let probing = TLSConfig.isTLS(options.connect)
        Task { [weak self] in
            var connected = false
            for await event in socket.pipeEvents {
                switch event.kind {
                case .added:
                    let ports = ConnectionProbe.ports(of: event.pipe)
                    let open = probing && ports.map { ConnectionProbe.state(of: $0) == .open } ?? false
                    current.state.withLock { $0 = WatchedPipe.State(ports: ports, seenOpen: open) }
                    connected = true
                case .removed where connected:
                    current.state.withLock { $0.ports = nil }
                    self?.connectionEnded(generation, "the connection to the coordinator closed; dialing a fresh one")
                    return
                default:
                    break
                }
            }
        }
        guard probing else { return }
        Task { [weak self] in
            var goneChecks = 0
            while true {
                try? await Task.sleep(for: .seconds(1))
                guard let self, self.generation == generation, !self.connection.withLock({ $0.closed }) else { return }
                let (ports, seenOpen) = current.state.withLock { ($0.ports, $0.seenOpen) }
                guard let ports else {
                    goneChecks = 0
                    continue
                }
                let state = ConnectionProbe.state(of: ports)
                if state == .open { current.state.withLock { if $0.ports == ports { $0.seenOpen = true } } }
                goneChecks = state.isGone(seenOpen: seenOpen) ? goneChecks + 1 : 0
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
        // A socket not used is closed with the replaced ones (never here: a close can hang).
        let outcome: Result<Int, CancellationError>? = connection.withLock {
            guard !$0.closed else {
                $0.replaced.append(fresh)
                return .failure(CancellationError())
            }
            if let expected, $0.generation != expected {
                $0.replaced.append(fresh)
                return nil
            }
            $0.replaced.append($0.socket)
            $0.socket = fresh
            $0.generation += 1
            return .success($0.generation)
        }
        guard let outcome else { return }
        watch(fresh, generation: try outcome.get())
    }

    /// Runs `body` until it ends or the connection it started on is replaced; then it is
    /// cancelled (its pending requests end at once) and `ConnectionLost` is thrown.
    func whileConnected(_ body: @escaping @Sendable () async throws -> Exit?) async throws -> Exit? {
        let generation = self.generation
        // Replaced sockets are closed once the attempt (and every request of it) has ended.
        defer { retireReplacedSockets() }
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
            Task { [weak self] in
                guard await !socket.close(waitingAtMost: .seconds(Self.retireSeconds)), let self else { return }
                // A worker that has finished (or is closing) has no use for a restart.
                guard self.options.restartInPlaceWhenStuck, !self.connection.withLock({ $0.closed }) else {
                    self.logger.warning("nng did not finish closing an old connection within \(Int(Self.retireSeconds)) s; going on without it")
                    return
                }
                Self.restartBecauseNNGIsStuck(self.logger)
            }
        }
    }

    private static func restartBecauseNNGIsStuck(_ logger: Logger) {
        guard RestartInPlace.claim() else { return }  // another retirement is restarting already
        let count = RestartInPlace.recentCount
        guard count < maxRestartsInPlacePerHour else {
            logger.critical("nng could not close the old connection within \(Int(retireSeconds)) s again, after \(count) restarts in place within the hour; giving up (see the log above for the connections' errors)")
            exit(EXIT_FAILURE)
        }
        logger.error("nng could not close the old connection within \(Int(retireSeconds)) s: this process's nng can no longer tear connections down (a libnng 1.5.2 TLS fault). Restarting this worker in place (same process ID and arguments); it joins again")
        let reason = RestartInPlace.now()
        logger.critical("could not restart this worker in place: \(reason)")
        exit(EXIT_FAILURE)
    }
}
