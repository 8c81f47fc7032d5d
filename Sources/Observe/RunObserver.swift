import Coordination
import Foundation
import Synchronization

/// What the coordinator's HTTP endpoint shows, kept up to date by the coordinator's shell: it is
/// handed the state machine's directives (with the machine after them), the requests' senders
/// and sizes, and the parameter server's numbers of each step. It decides nothing; it counts,
/// keeps the last points of the curves, and updates the Prometheus series.
///
/// Fed from the coordinator's actor and read from nng's HTTP threads, under one lock.
public final class RunObserver: Sendable {
    public struct Run: Sendable {
        public var runID: String
        public var totalSteps: Int
        public var startStep: Int
        public var method: String
        /// Prunable tensors, in layout order.
        public var layers: [String]
        public var goalSparsity: Double?
        public var goalWer: Double?
        public var departedSeriesSeconds: Double
        public init(runID: String, totalSteps: Int, startStep: Int, method: String, layers: [String],
                    goalSparsity: Double? = nil, goalWer: Double? = nil, departedSeriesSeconds: Double = 300) {
            self.runID = runID
            self.totalSteps = totalSteps
            self.startStep = startStep
            self.method = method
            self.layers = layers
            self.goalSparsity = goalSparsity
            self.goalWer = goalWer
            self.departedSeriesSeconds = departedSeriesSeconds
        }
    }

    /// The numbers of one applied step, as the shell recorded them (metrics.jsonl's line).
    public struct Step: Sendable {
        public var step: Int
        public var loss: Double
        public var learningRate: Double
        public var examples: Int
        public var stepSeconds: Double
        public var examplesPerSecond: Double
        /// Seconds of audio in the step's examples, when the task knows (speech).
        public var audioSeconds: Double?
        public var sparsity: Double
        public var sparsityOverall: Double
        public var projectionSeconds: Double
        public var wallSeconds: Double
        public var validWer: Double?
        public var validWerChannel: Double?
        /// The validation split spoken by training voices (`data.valid_seen`).
        public var validWerSeen: Double?
        public init(step: Int, loss: Double, learningRate: Double, examples: Int, stepSeconds: Double, examplesPerSecond: Double,
                    audioSeconds: Double? = nil, sparsity: Double, sparsityOverall: Double, projectionSeconds: Double, wallSeconds: Double,
                    validWer: Double? = nil, validWerChannel: Double? = nil, validWerSeen: Double? = nil) {
            self.step = step
            self.loss = loss
            self.learningRate = learningRate
            self.examples = examples
            self.stepSeconds = stepSeconds
            self.examplesPerSecond = examplesPerSecond
            self.audioSeconds = audioSeconds
            self.sparsity = sparsity
            self.sparsityOverall = sparsityOverall
            self.projectionSeconds = projectionSeconds
            self.wallSeconds = wallSeconds
            self.validWer = validWer
            self.validWerChannel = validWerChannel
            self.validWerSeen = validWerSeen
        }
    }

    /// One pruned layer of a support update.
    public struct LayerUpdate: Sendable {
        public var name: String
        public var density: Double
        public var overlapWithTopK: Double?
        public var recoveryError: Double?
        public init(name: String, density: Double, overlapWithTopK: Double?, recoveryError: Double?) {
            self.name = name
            self.density = density
            self.overlapWithTopK = overlapWithTopK
            self.recoveryError = recoveryError
        }
    }

    struct Worker {
        var host: String
        var state = "joined"
        var microBatches = 0
        var stepSeconds: Double?
        var lastHeard: Double
        var departed: Double?
        var refused: [String: Int] = [:]
        /// Micro-batches handed to it and not complete, with when.
        var tasks: [Int: Double] = [:]
    }

    struct State {
        var run: Run
        var phase = "waiting_for_workers"
        var status: String?
        var step: Int
        var started: Double
        var points: [RunStatus.Point] = []
        var workers: [String: Worker] = [:]
        var layers: [String: RunStatus.Layer] = [:]
        var supportUpdateStep: Int?
        var validWer: Double?
        var validWerChannel: Double?
        var validWerSeen: Double?
        /// Requests answered by the machine but not yet replied to: the sender and whether it
        /// carried a gradient chunk.
        var pending: [RequestID: (worker: String, chunk: Bool)] = [:]
    }

    /// Points kept for the curves (`/api/status` and `/api/metrics`); older ones are thinned.
    public static let maxPoints = 4000

    private let state: Mutex<State>
    let metrics: RunMetrics

    public init(_ run: Run, now: Double) {
        metrics = RunMetrics(layers: run.layers)
        var s = State(run: run, step: run.startStep, started: now)
        for layer in run.layers { s.layers[layer] = RunStatus.Layer(name: layer, sparsity: 0) }
        state = Mutex(s)
        metrics.totalSteps.record(Double(run.totalSteps))
        metrics.step.record(Double(run.startStep))
    }

    // MARK: Fed by the shell

    /// A request the machine is about to see: who sent it (nil before it joined, unknown
    /// sessions) and its size.
    public func request(_ id: RequestID, worker: String?, chunk: Bool, bytes: Int, now: Double) {
        metrics.receivedBytes.increment(by: Int64(bytes))
        guard let worker else { return }
        state.withLock { s in
            s.pending[id] = (worker, chunk)
            s.workers[worker]?.lastHeard = now
        }
    }

    /// A reply has left (or failed to): its bytes.
    public func replySent(bytes: Int) { metrics.sentBytes.increment(by: Int64(bytes)) }

    /// The machine's directives for one event, and the machine after it.
    public func observe(_ directives: [RunStateMachine.Directive], machine: RunStateMachine, now: Double) {
        let round = machine.round
        let members = machine.membership.members
        observe(directives, phase: machine.phase, step: machine.step, workers: members.count,
                isMember: { name in members.values.contains { $0.name == name } },
                completes: { mb in round.microBatches.indices.contains(mb) && round.microBatches[mb].status == .complete },
                now: now)
    }

    /// The same with what it reads of the machine given apart (the observe benchmark feeds it
    /// a synthetic run): `completes(mb)` is whether micro-batch `mb` is complete after the event.
    package func observe(_ directives: [RunStateMachine.Directive], phase: RunStateMachine.Phase, step: Int, workers: Int,
                         isMember: (String) -> Bool, completes: (Int) -> Bool, now: Double) {
        state.withLock { s in
            for directive in directives { apply(directive, isMember: isMember, completes: completes, now: now, to: &s) }
            s.step = step
            s.phase = Self.phaseName(phase)
        }
        metrics.step.record(Double(step))
        metrics.workers.record(Double(workers))
    }

    private func apply(_ directive: RunStateMachine.Directive, isMember: (String) -> Bool, completes: (Int) -> Bool, now: Double,
                       to s: inout State) {
        switch directive {
        case let .reply(id, response):
            guard let (worker, chunk) = s.pending.removeValue(forKey: id) else { return }
            switch response {
            case let .task(task):
                if case .train = task.kind { s.workers[worker]?.tasks[task.index] = now }
            case let .ack(status) where chunk:
                switch status {
                case .accepted: break
                case .duplicate: refuse(worker, "duplicate", &s)
                case .stale: refuse(worker, "stale", &s)
                }
            case let .refusal(code, _) where chunk:
                refuse(worker, Self.reason(code), &s)
            default: break
            }
        case let .fold(id, _, _, microBatch, _):
            // The fold that completes a micro-batch: the machine already counts it complete.
            guard let worker = s.pending[id]?.worker, completes(microBatch) else { return }
            let series = metrics.worker(worker)
            series.microBatches.increment()
            s.workers[worker]?.microBatches += 1
            if let started = s.workers[worker]?.tasks.removeValue(forKey: microBatch) {
                s.workers[worker]?.stepSeconds = now - started
                series.microBatchDuration.recordSeconds(now - started)
            }
        case let .memberJoined(member, peer):
            metrics.joins.increment()
            _ = metrics.worker(member.name)
            var w = Worker(host: Self.host(peer), lastHeard: now)
            w.microBatches = s.workers[member.name]?.microBatches ?? 0
            w.refused = s.workers[member.name]?.refused ?? [:]
            s.workers[member.name] = w
        case let .memberRemoved(member, reason, _, reassigned):
            let name = Self.reason(reason)
            metrics.removals[name]?.increment()
            metrics.reassigned.increment(by: Int64(reassigned.count))
            // The same name may have rejoined under a new session meanwhile.
            if !isMember(member.name) {
                s.workers[member.name]?.state = name
                s.workers[member.name]?.departed = now
                s.workers[member.name]?.tasks = [:]
            }
        case let .finish(status, _):
            s.status = status.rawValue
        default:
            break
        }
    }

    private func refuse(_ worker: String, _ reason: String, _ s: inout State) {
        metrics.worker(worker).refused[reason]?.increment()
        s.workers[worker]?.refused[reason, default: 0] += 1
    }

    /// A step's line was recorded.
    public func recorded(_ step: Step) {
        let finite = { (v: Double) in v.isFinite ? v : nil }
        state.withLock { s in
            s.step = max(s.step, step.step)
            if let wer = step.validWer { s.validWer = wer }
            if let wer = step.validWerChannel { s.validWerChannel = wer }
            if let wer = step.validWerSeen { s.validWerSeen = wer }
            s.points.append(RunStatus.Point(step: step.step, wallSeconds: step.wallSeconds, loss: finite(step.loss),
                                            learningRate: finite(step.learningRate), stepSeconds: step.stepSeconds,
                                            examplesPerSecond: step.examplesPerSecond, sparsity: step.sparsity,
                                            validWer: step.validWer, validWerChannel: step.validWerChannel, validWerSeen: step.validWerSeen))
            if s.points.count > Self.maxPoints {
                // Keep every second old point, the recent half as it is, and any with a WER.
                let half = s.points.count / 2
                var thinned: [RunStatus.Point] = []
                for (i, p) in s.points[..<half].enumerated() where i % 2 == 0 || p.validWer != nil { thinned.append(p) }
                s.points = thinned + s.points[half...]
            }
        }
        if step.loss.isFinite { metrics.loss.record(step.loss) }
        if step.learningRate.isFinite { metrics.learningRate.record(step.learningRate) }
        metrics.examplesPerSecond.record(step.examplesPerSecond)
        if let audio = step.audioSeconds, step.stepSeconds > 0 { metrics.audioSecondsPerSecond.record(audio / step.stepSeconds) }
        metrics.stepDuration.recordSeconds(step.stepSeconds)
        metrics.sparsity.record(step.sparsity)
        metrics.sparsityOverall.record(step.sparsityOverall)
        if step.projectionSeconds > 0 { metrics.projectionDuration.recordSeconds(step.projectionSeconds) }
        if let wer = step.validWer { metrics.validationWER["valid"]?.record(wer) }
        if let wer = step.validWerChannel { metrics.validationWER["valid_channel"]?.record(wer) }
        if let wer = step.validWerSeen { metrics.validationWER["valid_seen"]?.record(wer) }
    }

    /// The projection chose a new support (`step` counted from 1).
    public func supportUpdated(step: Int, layers: [LayerUpdate]) {
        state.withLock { s in
            s.supportUpdateStep = step
            for l in layers {
                s.layers[l.name] = RunStatus.Layer(name: l.name, sparsity: 1 - l.density, overlapWithTopK: l.overlapWithTopK,
                                                   recoveryError: l.recoveryError)
                metrics.setLayerSparsity(l.name, 1 - l.density)
            }
        }
    }

    public func checkpointWritten(seconds: Double) { metrics.checkpointWriteDuration.recordSeconds(seconds) }

    // MARK: Read by the endpoint

    /// Brings the time-dependent series up to `now` (seconds since last heard) and removes the
    /// series of workers gone longer than `departedSeriesSeconds`.
    func refresh(now: Double) {
        state.withLock { s in
            for (name, w) in s.workers {
                if let departed = w.departed, now - departed > s.run.departedSeriesSeconds {
                    metrics.removeWorker(name)
                    s.workers.removeValue(forKey: name)
                    continue
                }
                metrics.worker(name).lastHeard.record(now - w.lastHeard)
            }
        }
    }

    /// Prometheus text exposition of every series.
    public func prometheusText(now: Double) -> [UInt8] {
        refresh(now: now)
        var buffer: [UInt8] = []
        buffer.reserveCapacity(16 << 10)
        // The registry locks itself: the shell is not held up while the text is rendered.
        metrics.emit(into: &buffer)
        return buffer
    }

    public func status(now: Double, since: Int? = nil) -> RunStatus {
        refresh(now: now)
        return state.withLock { s in
            let recent = s.points.suffix(20)
            var eta: Double?
            if let first = recent.first, let last = recent.last, last.step > first.step {
                let perStep = (last.wallSeconds - first.wallSeconds) / Double(last.step - first.step)
                eta = perStep * Double(max(0, s.run.totalSteps - s.step))
            }
            let last = s.points.last
            let run = RunStatus.Run(id: s.run.runID, phase: s.phase, status: s.status, step: s.step, totalSteps: s.run.totalSteps,
                                    startStep: s.run.startStep, method: s.run.method, elapsedSeconds: now - s.started, etaSeconds: eta,
                                    examplesPerSecond: last?.examplesPerSecond, loss: last?.loss, learningRate: last?.learningRate,
                                    validWer: s.validWer, validWerChannel: s.validWerChannel, validWerSeen: s.validWerSeen,
                                    goalSparsity: s.run.goalSparsity, goalWer: s.run.goalWer)
            let workers = s.workers.sorted { $0.key < $1.key }.map { name, w in
                RunStatus.Worker(name: name, host: w.host, state: w.state, microBatches: w.microBatches, stepSeconds: w.stepSeconds,
                                 lastHeardSecondsAgo: max(0, now - w.lastHeard), refused: w.refused)
            }
            let points = since.map { since in s.points.filter { $0.step > since } } ?? s.points
            let layers = s.run.layers.compactMap { s.layers[$0] }
            return RunStatus(run: run, workers: workers, points: points, layers: layers, supportUpdateStep: s.supportUpdateStep)
        }
    }

    // MARK: Names

    static func phaseName(_ phase: RunStateMachine.Phase) -> String {
        switch phase {
        case .waitingForWorkers: "waiting_for_workers"
        case .training: "training"
        case .evaluating: "evaluating"
        case .finishing: "finishing"
        case .finished: "finished"
        }
    }

    static func reason(_ code: RefusalCode) -> String {
        switch code {
        case .notAssigned: "not_assigned"
        case .malformed: "malformed"
        case .overloaded: "overloaded"
        default: "other"
        }
    }

    static func reason(_ reason: Membership.Reason) -> String {
        switch reason {
        case .left: "left"
        case .disconnected: "disconnected"
        case .missedDeadline: "missed_deadline"
        case .silent: "silent"
        }
    }

    /// `tcp://10.0.0.2:51234` → `10.0.0.2`.
    static func host(_ peer: String) -> String {
        var p = peer
        if let r = p.range(of: "://") { p = String(p[r.upperBound...]) }
        if let colon = p.lastIndex(of: ":") { p = String(p[..<colon]) }
        return p.isEmpty ? peer : p
    }
}
