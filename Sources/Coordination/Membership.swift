import Foundation

/// A session granted to a worker that joined.
public struct SessionID: Hashable, Sendable, CustomStringConvertible {
    public let bytes: Data
    public init(_ bytes: Data) { self.bytes = bytes }
    /// First 4 bytes in hex: enough to tell sessions apart in logs, useless to an attacker.
    public var description: String { bytes.prefix(4).map { String(format: "%02x", $0) }.joined() }
}

/// Who is in the run. Pure bookkeeping: the shell feeds it events and acts on what it returns.
public struct Membership: Sendable {
    public struct Member: Sendable, Equatable {
        public let id: UInt32
        public let name: String
        public let session: SessionID
        /// The connection the member joined on (an nng pipe id): the only one its session is
        /// valid on.
        public let pipe: UInt32
        public var lastSeen: Double

        /// For benchmarks that feed observers a synthetic run; members are made by ``join``.
        package init(id: UInt32, name: String, session: SessionID, pipe: UInt32, lastSeen: Double) {
            self.id = id
            self.name = name
            self.session = session
            self.pipe = pipe
            self.lastSeen = lastSeen
        }
    }

    public private(set) var members: [SessionID: Member] = [:]
    private var nextID: UInt32 = 1
    /// Members that ever joined (a worker that rejoins counts again).
    public private(set) var joinedTotal = 0
    /// Members removed for a failure (disconnect or missed deadline), not for leaving.
    public private(set) var failedTotal = 0

    public init() {}

    public var count: Int { members.count }

    public mutating func join(name: String, session: SessionID, pipe: UInt32, now: Double) -> Member {
        let member = Member(id: nextID, name: name, session: session, pipe: pipe, lastSeen: now)
        nextID += 1
        joinedTotal += 1
        members[session] = member
        return member
    }

    /// What a request's session turned out to be.
    public enum Touch: Sendable, Equatable {
        case member(Member)
        /// Not a session of this run (never granted, or dropped).
        case unknown
        /// A member's session, used from a connection other than the one that joined it: the
        /// request is refused and the member keeps its session (and its connection).
        case otherPipe(Member)
    }

    /// Records activity of `session` on `pipe`. A session is bound to the connection it joined
    /// on: a request from any other connection does not count as the member's activity. (A
    /// worker whose connection dropped and was dialled again joins again.)
    public mutating func touch(_ session: SessionID, pipe: UInt32, now: Double) -> Touch {
        guard var member = members[session] else { return .unknown }
        guard member.pipe == pipe else { return .otherPipe(member) }
        member.lastSeen = now
        members[session] = member
        return .member(member)
    }

    /// The coordinator could not hear anyone for `seconds` (it was busy, e.g. in a long
    /// projection): members seen before then get that time back, so silence is not blamed on them.
    public mutating func pardon(seconds: Double, before start: Double) {
        for (session, member) in members where member.lastSeen <= start {
            members[session]!.lastSeen = member.lastSeen + seconds
        }
    }

    public enum Reason: String, Sendable {
        case left
        case disconnected
        case missedDeadline = "missed deadline"
        /// No request for far longer than an idle member's polling interval.
        case silent
    }

    @discardableResult
    public mutating func remove(_ session: SessionID, reason: Reason) -> Member? {
        guard let member = members.removeValue(forKey: session) else { return nil }
        if reason != .left { failedTotal += 1 }
        return member
    }

    /// Removes every member whose connection was `pipe`.
    public mutating func removeAll(onPipe pipe: UInt32) -> [Member] {
        let gone = members.values.filter { $0.pipe == pipe }
        for member in gone { remove(member.session, reason: .disconnected) }
        return gone
    }
}
