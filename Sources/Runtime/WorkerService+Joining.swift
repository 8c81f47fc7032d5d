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

/// Joining: the handshake that proves the run's token and returns a session, the replies'
/// parsing, and what a refusal means to the worker.
extension WorkerService {
    struct Session {
        let id: Data
        let runID: String
        let workerID: UInt32
        let model: any TrainableModel
        /// The gradient, then the input statistics the run's pruning method reads.
        let exchange: ExchangeLayout
        let chunkValues: Int
        let sendWindow: Int
        /// transport.gradient_buffers: 2 computes beside the last send, 1 after it.
        let gradientBuffers: Int
        let resendSeconds: Double
        /// transport.request_timeout_seconds: how long a request waits before it is asked again.
        let requestTimeoutSeconds: Double
        /// coordinator.gradient_values: bf16.
        let gradientBF16: Bool
        /// The connection generation the session was joined on (`replaceConnection(from:)`).
        let generation: Int
        /// The run's seed: sketched input statistics draw their combinations from it.
        let seed: UInt64
        /// The coordinator's chunk stream port (0: none; chunks go as requests).
        let chunkStreamPort: Int
    }

    func call(_ request: Request, context: Context) async throws -> Reply {
        let message = try await context.request(Message(request.serializedBytes() as [UInt8]), timeout: .seconds(options.requestTimeoutSeconds))
        return try parse(message)
    }

    func parse(_ message: Message) throws -> Reply {
        do {
            return try message.withUnsafeBytes { try Reply.parse($0) }
        } catch {
            throw WorkerError("the coordinator at \(options.connect) sent a reply that does not parse (\(message.count) bytes): \(error)")
        }
    }

    func join() async throws -> Session {
        let generation = self.generation
        let context = try socket.openContext()
        try context.setResendTime(.seconds(options.requestTimeoutSeconds))
        let clientNonce = randomBytes(JoinHandshake.nonceBytes)
        var hello = Request()
        hello.header = Csptrain_V1_Header.make(runID: "")
        hello.hello = Csptrain_V1_Hello.with { $0.workerName = options.name; $0.clientNonce = clientNonce }
        let challengeReply = try await call(hello, context: context)
        try checkRefusal(challengeReply, joining: true)
        guard case let .challenge(challenge)? = challengeReply.body else {
            throw WorkerError("the coordinator answered Hello with \(String(describing: challengeReply.body)), expected a challenge")
        }
        let runID = challengeReply.header.runID
        var proof = Request()
        proof.header = Csptrain_V1_Header.make(runID: runID)
        proof.proof = Csptrain_V1_Proof.with {
            $0.workerName = options.name
            $0.clientNonce = clientNonce
            $0.serverNonce = challenge.serverNonce
            $0.mac = JoinHandshake.joinMAC(token: options.token, runID: runID, serverNonce: challenge.serverNonce,
                                           clientNonce: clientNonce, workerName: options.name)
            $0.computeSignature = BLASRuntime.computeSignature
        }
        let welcomeReply = try await call(proof, context: context)
        try checkRefusal(welcomeReply, joining: true)
        guard case let .welcome(welcome)? = welcomeReply.body else {
            throw WorkerError("the coordinator answered the proof with \(String(describing: welcomeReply.body)), expected welcome")
        }
        let session = welcomeReply.header.session
        let expectedMAC = JoinHandshake.welcomeMAC(token: options.token, runID: runID, clientNonce: clientNonce,
                                                   serverNonce: challenge.serverNonce, session: session)
        guard expectedMAC == welcome.serverMac else {
            throw WorkerError("the coordinator at \(options.connect) could not prove it holds the run token: refusing to work for it")
        }
        guard welcome.chunkValues > 0 else {
            throw WorkerError("the coordinator at \(options.connect) sent chunk_values 0 in its welcome: it is not a csptrain v1 coordinator")
        }
        var config = try RunConfiguration.parse(yaml: welcome.configYaml, source: "the coordinator's configuration")
        if let folder = options.dataFolders["train"] { config.data.train = folder }
        if let folder = options.dataFolders["valid"] { config.data.valid = folder }
        if let folder = options.dataFolders["valid_channel"] { config.data.validChannel = folder }
        if let folder = options.dataFolders["valid_seen"] { config.data.validSeen = folder }
        VectorMath.setThreadCount(1)
        let model = try ModelFactory.make(model: config.model, data: config.data, augmentation: config.augmentation, seed: config.seed)
        let ours = model.layout.wireTensors
        guard ours == welcome.tensors else {
            throw WorkerError("this worker builds a model whose tensors differ from the coordinator's (\(ours.map(\.name)) vs \(welcome.tensors.map(\.name))): are both the same csptrain version?")
        }
        guard model.dataFingerprint == welcome.dataFingerprint else {
            let reason = "this worker's data differ from the coordinator's (fingerprints \(model.dataFingerprint) here, \(welcome.dataFingerprint) there): the same example indices would train on other utterances. Point data.train/valid/valid_channel/valid_seen at the same prepared shards (a copy made with cp/rsync matches)"
            var leave = Request()
            leave.header = Csptrain_V1_Header.make(runID: runID, session: session)
            leave.leave = Csptrain_V1_Leave.with { $0.reason = "data fingerprint mismatch" }
            _ = try? await call(leave, context: context)
            throw WorkerError(reason)
        }
        logger.info("joined", metadata: ["run": "\(runID)", "worker_id": "\(welcome.workerID)", "parameters": "\(model.layout.totalCount)"])
        let sites = config.pruning.statisticSites(layout: model.layout, available: model.statisticSites)
        return Session(id: session, runID: runID, workerID: welcome.workerID, model: model,
                       exchange: ExchangeLayout(parameters: model.layout, sites: sites),
                       chunkValues: Int(welcome.chunkValues), sendWindow: config.transport.sendWindow,
                       gradientBuffers: config.transport.gradientBuffers,
                       resendSeconds: max(config.coordinator.pollHoldSeconds + 1, config.transport.resendSeconds),
                       requestTimeoutSeconds: max(config.coordinator.pollHoldSeconds + 1, config.transport.requestTimeoutSeconds),
                       gradientBF16: config.coordinator.gradientValues == .bf16, generation: generation, seed: config.seed,
                       chunkStreamPort: Int(welcome.chunkStreamPort))
    }

    func checkRefusal(_ reply: Reply, joining: Bool = false) throws {
        guard case let .refusal(refusal)? = reply.body else { return }
        switch refusal.code {
        case .unknownSession, .challengeExpired, .wrongRun:
            // The coordinator restarted (new run or lost sessions) or dropped us: join again.
            throw Rejoin(reason: "the coordinator does not know this session (it restarted or dropped us)")
        case .badProof:
            throw WorkerError("the coordinator refused this worker's proof: the token is not the run's token (\(refusal.reason))")
        case .incompatible:
            throw WorkerError("the coordinator cannot use this worker: \(refusal.reason)")
        case .overloaded:
            // Too many of this worker's requests are unanswered: the caller waits and sends again.
            throw Overloaded(reason: refusal.reason, atJoin: joining)
        case .tooLarge:
            throw WorkerError("the coordinator refused a message as too large: \(refusal.reason)")
        case .versionMismatch:
            throw WorkerError("protocol version mismatch: this worker speaks \(protocolVersion), the coordinator \(reply.header.protocolVersion) (\(refusal.reason))")
        default:
            throw WorkerError("the coordinator refused a request: \(refusal.code): \(refusal.reason)")
        }
    }
}

/// The session is gone (unknown to the coordinator, or its connection given up): join again.
struct Rejoin: Error {
    let reason: String
}

/// The coordinator refused a request because too many of this session's were in flight.
/// The coordinator refused a request for a limit: in flight (wait and send again) or at join
/// (`security.max_workers`, `security.join_attempts_per_minute`: wait longer and join again).
struct Overloaded: Error {
    var reason = ""
    var atJoin = false
}

public struct WorkerError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
