import CNNG
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Asks the kernel whether a pipe's TCP connection still exists.
///
/// libnng 1.5.2's TLS layer (Debian 12's) can miss the end of a connection: when the TCP
/// stream fails while no read is queued, the next read is started on an aio already stopped
/// and never completes, so the pipe stays open with nothing under it and its requests wait for
/// their timeout. The kernel knows better: /proc/net/tcp{,6} no longer lists the connection as
/// established.
public enum ConnectionProbe {
    public enum State: Sendable, Equatable {
        /// The kernel lists the connection as established.
        case open
        /// The kernel lists the connection in another state: the peer's FIN arrived, or it is
        /// closing (CLOSE_WAIT, TIME_WAIT, ...). It will carry nothing more.
        case closing
        /// The kernel lists no connection between the pipe's two ports: it is gone (a reset),
        /// or this kernel's tables do not show this process's connections (some sandboxes), so
        /// this means gone only for a connection once seen open.
        case absent
        /// The tables could not be read.
        case unknown

        /// Whether this says the connection will carry nothing more, given whether it was
        /// ever seen open.
        public func isGone(seenOpen: Bool) -> Bool {
            switch self {
            case .closing: true
            case .absent: seenOpen
            case .open, .unknown: false
            }
        }
    }

    /// A TCP connection's two ports.
    public struct Ports: Sendable, Equatable {
        public let local: UInt16
        public let remote: UInt16
    }

    /// `pipe`'s ports, read while it is connected (once the connection is gone, nng can no
    /// longer tell its peer); nil for a pipe that is not TCP.
    public static func ports(of pipe: PipeID) -> Ports? {
        guard let local = port(pipe, NNG_OPT_LOCADDR), let remote = port(pipe, NNG_OPT_REMADDR) else { return nil }
        return Ports(local: local, remote: remote)
    }

    /// How the kernel lists the connection between `ports`: open when any line between them is
    /// established (a port pair can also appear in an older connection's closing line, to
    /// another address), closing when lines exist and none is.
    public static func state(of ports: Ports, tables: [String] = ["/proc/net/tcp", "/proc/net/tcp6"]) -> State {
        var readAny = false, listed = false
        for table in tables {
            guard let text = readWhole(table) else { continue }
            readAny = true
            let states = listedStates(text, local: ports.local, remote: ports.remote)
            if states.contains("01") { return .open }
            listed = listed || !states.isEmpty
        }
        return !readAny ? .unknown : listed ? .closing : .absent
    }

    /// The state fields (two hex digits; "01" is established) of every connection from port
    /// `local` to port `remote` in a /proc/net/tcp-style table.
    static func listedStates(_ table: String, local: UInt16, remote: UInt16) -> [Substring] {
        let localSuffix = String(format: ":%04X", local), remoteSuffix = String(format: ":%04X", remote)
        var states: [Substring] = []
        for line in table.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count > 3 else { continue }
            if fields[1].hasSuffix(localSuffix), fields[2].hasSuffix(remoteSuffix) { states.append(fields[3]) }
        }
        return states
    }

    /// A /proc file's whole text. (Foundation's readers trust the file's size, which /proc
    /// reports as 0, and stop after the first page: 27 of 136 lines were read in one test.)
    static func readWhole(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        var bytes: [UInt8] = [], buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n >= 0 else { return nil }
            if n == 0 { break }
            bytes += buffer[0 ..< n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func port(_ pipe: PipeID, _ option: String) -> UInt16? {
        var address = nng_sockaddr()
        guard nng_pipe_get_addr(nng_pipe(id: pipe.rawValue), option, &address) == 0 else { return nil }
        return SocketAddress(address).port
    }
}
