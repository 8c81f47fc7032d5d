import Coordination
import Foundation
import Transport
import Wire

/// A member that asks for work many times at once (issue 11's flood), built on Transport and Wire
/// as a worker in another language would be: the join handshake with the run token, then `count`
/// WorkRequests with weights_version 0 on as many REQ contexts of one socket, so every task
/// answered would carry the whole model.
final class FloodClient: Sendable {
    /// How a flood was answered.
    struct Tally: Sendable {
        var tasks = 0, waits = 0, overloaded = 0, other = 0
        /// Bytes of all replies together.
        var replyBytes = 0
        var overloadReason: String?

        mutating func add(_ t: Tally) {
            tasks += t.tasks; waits += t.waits; overloaded += t.overloaded; other += t.other
            replyBytes += t.replyBytes
            overloadReason = overloadReason ?? t.overloadReason
        }
    }

    let socket: Socket
    let runID: String
    let session: Data

    private init(socket: Socket, runID: String, session: Data) {
        self.socket = socket
        self.runID = runID
        self.session = session
    }

    /// Joins the run at `url` as `name`.
    static func join(url: String, token: [UInt8], name: String = "flood") async throws -> FloodClient {
        let socket = try Socket(.req)
        do {
            try socket.dial(url, maxMessageSize: 1 << 30)
            let context = try socket.openContext()
            try context.setResendTime(.seconds(600))
            let clientNonce = Data((0 ..< JoinHandshake.nonceBytes).map { _ in UInt8.random(in: 0 ... 255) })
            var hello = Request()
            hello.header = Csptrain_V1_Header.make(runID: "")
            hello.hello = .with { $0.workerName = name; $0.clientNonce = clientNonce }
            let challenge = try await call(hello, on: context)
            guard case let .challenge(c)? = challenge.body else { throw BenchmarkError("flood client: Hello answered with \(challenge)") }
            var proof = Request()
            proof.header = Csptrain_V1_Header.make(runID: challenge.header.runID)
            proof.proof = .with {
                $0.workerName = name
                $0.clientNonce = clientNonce
                $0.serverNonce = c.serverNonce
                $0.mac = JoinHandshake.joinMAC(token: token, runID: challenge.header.runID, serverNonce: c.serverNonce,
                                               clientNonce: clientNonce, workerName: name)
            }
            let welcome = try await call(proof, on: context)
            guard case .welcome? = welcome.body else { throw BenchmarkError("flood client: the proof was answered with \(welcome)") }
            return FloodClient(socket: socket, runID: challenge.header.runID, session: welcome.header.session)
        } catch {
            socket.close()
            throw error
        }
    }

    private static func call(_ request: Request, on context: Context) async throws -> Reply {
        let reply = try await context.request(Message(request.serializedBytes() as [UInt8]), timeout: .seconds(30))
        return try reply.withUnsafeBytes { try Reply.parse($0) }
    }

    /// Sends `count` work requests at once and waits for every reply.
    func flood(_ count: Int) async throws -> Tally {
        var request = Request()
        request.header = Csptrain_V1_Header.make(runID: runID, session: session)
        request.work = .with { $0.weightsVersion = 0 }
        let bytes: [UInt8] = try request.serializedBytes()
        let contexts = try (0 ..< count).map { _ in
            let c = try socket.openContext()
            try c.setResendTime(.seconds(600))
            return c
        }
        return try await withThrowingTaskGroup(of: Tally.self) { group in
            for c in contexts {
                group.addTask { try await Self.ask(c, bytes) }
            }
            var total = Tally()
            for try await t in group { total.add(t) }
            return total
        }
    }

    /// One work request on `context`, and how it was answered.
    private static func ask(_ context: Context, _ bytes: [UInt8]) async throws -> Tally {
        let message: Message
        do { message = try await context.request(Message(bytes), timeout: .seconds(60)) } catch { throw error as Error }
        let reply: Reply = try message.withUnsafeBytes { raw throws -> Reply in try Reply.parseLeavingWeights(raw).reply }
        var t = Tally()
        t.replyBytes = message.count
        switch reply.body {
        case .task?: t.tasks = 1
        case .wait?: t.waits = 1
        case let .refusal(r)? where r.code == .overloaded:
            t.overloaded = 1
            t.overloadReason = r.reason
        default: t.other = 1
        }
        return t
    }

    func close() { socket.close() }
}
