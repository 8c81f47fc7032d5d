import Crypto
import Foundation

/// The join handshake's cryptography and its table of open challenges.
///
/// A worker proves it knows the run token without sending it:
///
///     worker → Hello(name, client_nonce)
///     coordinator → Challenge(server_nonce)                       (kept ≤ `challengeLifetime`)
///     worker → Proof(name, client_nonce, server_nonce, mac)
///         mac = HMAC-SHA256(token, "csptrain.v1/join" 0 run_id 0 server_nonce client_nonce name)
///     coordinator → Welcome(session, server_mac)
///         server_mac = HMAC-SHA256(token, "csptrain.v1/welcome" 0 run_id 0 client_nonce server_nonce session)
///
/// Each challenge verifies at most one proof. The token never crosses the wire.
public struct JoinHandshake: Sendable {
    public enum Verdict: Sendable, Equatable {
        case accepted
        /// No open challenge with this nonce (expired, used, or never issued).
        case unknownChallenge
        /// The MAC did not verify: the worker holds a different token.
        case badProof
    }

    public static let nonceBytes = 32
    public static let sessionBytes = 16
    /// Client nonces shorter than this are refused: a nonce must be fresh and unguessable.
    public static let minimumNonceBytes = 16

    private let token: [UInt8]
    private var key: SymmetricKey { SymmetricKey(data: token) }
    public let runID: String
    public let challengeLifetime: Double
    /// Open challenges by server nonce: when each was issued (seconds, monotonic) and for which
    /// client nonce.
    private var open: [Data: (at: Double, clientNonce: Data)] = [:]
    /// The same challenges by client nonce, so that a Hello re-sent by nng's REQ (same client
    /// nonce) gets the challenge it already has instead of opening another one.
    private var byClient: [Data: Data] = [:]
    /// The same challenges in the order they were issued, so expiry and eviction take the
    /// oldest first without scanning (a flood of Hellos costs O(1) each).
    private var issued: [(nonce: Data, at: Double)] = []
    private var head = 0
    /// Upper bound on open challenges, so a flood of Hellos cannot exhaust memory.
    public let maxOpenChallenges: Int

    public init(token: [UInt8], runID: String, challengeLifetime: Double = 30, maxOpenChallenges: Int = 4096) {
        self.token = token
        self.runID = runID
        self.challengeLifetime = challengeLifetime
        self.maxOpenChallenges = maxOpenChallenges
    }

    /// The open challenge issued for `clientNonce`, if any: the answer to a re-sent Hello.
    public mutating func challenge(forClientNonce clientNonce: Data, now: Double) -> Data? {
        expire(now: now)
        return byClient[clientNonce]
    }

    /// Records a challenge the shell issued with a fresh random `serverNonce` for a Hello with
    /// `clientNonce`.
    public mutating func issue(serverNonce: Data, clientNonce: Data, now: Double) {
        expire(now: now)
        while open.count >= maxOpenChallenges, head < issued.count {
            close(issued[head].nonce)
            head += 1
        }
        if let earlier = byClient[clientNonce] { close(earlier) }
        close(serverNonce)  // a nonce issued again (never, with 32 random bytes) replaces the old challenge
        open[serverNonce] = (now, clientNonce)
        byClient[clientNonce] = serverNonce
        issued.append((serverNonce, now))
    }

    /// Open challenges (bounded by `maxOpenChallenges`).
    public var openCount: Int { open.count }

    private mutating func close(_ serverNonce: Data) {
        guard let challenge = open.removeValue(forKey: serverNonce) else { return }
        if byClient[challenge.clientNonce] == serverNonce { byClient.removeValue(forKey: challenge.clientNonce) }
    }

    /// Checks a proof; consumes the challenge whatever the outcome.
    public mutating func verify(workerName: String, clientNonce: Data, serverNonce: Data, mac: Data, now: Double) -> Verdict {
        expire(now: now)
        guard open[serverNonce] != nil else { return .unknownChallenge }
        close(serverNonce)
        let message = Self.joinMessage(runID: runID, serverNonce: serverNonce, clientNonce: clientNonce, workerName: workerName)
        return HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: message, using: key) ? .accepted : .badProof
    }

    /// The coordinator's proof that it holds the token too.
    public func serverMAC(clientNonce: Data, serverNonce: Data, session: Data) -> Data {
        Self.welcomeMAC(key: key, runID: runID, clientNonce: clientNonce, serverNonce: serverNonce, session: session)
    }

    /// Whether `mac` proves that whoever attaches a chunk stream for `session` holds the token
    /// and saw `serverNonce`, the nonce this coordinator sent on that stream.
    public func verifyStream(serverNonce: Data, session: Data, mac: Data) -> Bool {
        HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: Self.streamMessage(runID: runID, serverNonce: serverNonce, session: session),
                                               using: key)
    }

    private mutating func expire(now: Double) {
        while head < issued.count, now - issued[head].at > challengeLifetime {
            close(issued[head].nonce)
            head += 1
        }
        if head > 1024, head * 2 > issued.count {
            issued.removeFirst(head)
            head = 0
        }
    }

    // MARK: The MACs, shared by both sides.

    public static func joinMAC(token: [UInt8], runID: String, serverNonce: Data, clientNonce: Data, workerName: String) -> Data {
        let message = joinMessage(runID: runID, serverNonce: serverNonce, clientNonce: clientNonce, workerName: workerName)
        return Data(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: token)))
    }

    public static func welcomeMAC(token: [UInt8], runID: String, clientNonce: Data, serverNonce: Data, session: Data) -> Data {
        welcomeMAC(key: SymmetricKey(data: token), runID: runID, clientNonce: clientNonce, serverNonce: serverNonce, session: session)
    }

    private static func welcomeMAC(key: SymmetricKey, runID: String, clientNonce: Data, serverNonce: Data, session: Data) -> Data {
        let message = transcript("csptrain.v1/welcome", runID: runID, clientNonce, serverNonce, session)
        return Data(HMAC<SHA256>.authenticationCode(for: message, using: key))
    }

    /// A worker's proof, on a chunk stream the coordinator opened with `serverNonce`, that it is
    /// the member `session` (a session alone is not enough: it is valid only on the connection
    /// that joined it, and a stream is another connection).
    public static func streamMAC(token: [UInt8], runID: String, serverNonce: Data, session: Data) -> Data {
        Data(HMAC<SHA256>.authenticationCode(for: streamMessage(runID: runID, serverNonce: serverNonce, session: session),
                                             using: SymmetricKey(data: token)))
    }

    private static func streamMessage(runID: String, serverNonce: Data, session: Data) -> Data {
        transcript("csptrain.v1/chunk-stream", runID: runID, serverNonce, session)
    }

    private static func joinMessage(runID: String, serverNonce: Data, clientNonce: Data, workerName: String) -> Data {
        transcript("csptrain.v1/join", runID: runID, serverNonce, clientNonce, Data(workerName.utf8))
    }

    /// label ‖ 0x00 ‖ run_id ‖ 0x00 ‖ parts…: the byte string a MAC covers (Proto/README.md).
    private static func transcript(_ label: String, runID: String, _ parts: Data...) -> Data {
        var message = Data(label.utf8)
        message.append(0)
        message.append(Data(runID.utf8))
        message.append(0)
        for part in parts { message.append(part) }
        return message
    }
}
