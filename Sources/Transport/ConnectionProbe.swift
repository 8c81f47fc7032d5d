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
/// their timeout. The kernel knows better: the connection is gone from /proc/net/tcp{,6}.
public enum ConnectionProbe {
    public enum State: Sendable, Equatable {
        /// The kernel lists the connection as established.
        case open
        /// The kernel lists no established connection between the pipe's two ports: it is gone
        /// or closing (the peer's FIN or RST arrived), and will carry nothing more.
        case gone
        /// The tables could not be read.
        case unknown
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

    /// Whether the kernel still lists an established connection between `ports`.
    public static func state(of ports: Ports, tables: [String] = ["/proc/net/tcp", "/proc/net/tcp6"]) -> State {
        var readAny = false
        for table in tables {
            guard let text = readWhole(table) else { continue }
            readAny = true
            if listsOpen(text, local: ports.local, remote: ports.remote) { return .open }
        }
        return readAny ? .gone : .unknown
    }

    /// Whether a /proc/net/tcp-style table lists an established connection (state 01) from
    /// port `local` to port `remote`.
    static func listsOpen(_ table: String, local: UInt16, remote: UInt16) -> Bool {
        let localSuffix = String(format: ":%04X", local), remoteSuffix = String(format: ":%04X", remote)
        for line in table.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count > 3 else { continue }
            if fields[1].hasSuffix(localSuffix), fields[2].hasSuffix(remoteSuffix), fields[3] == "01" { return true }
        }
        return false
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
