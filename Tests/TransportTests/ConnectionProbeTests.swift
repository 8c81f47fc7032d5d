import Foundation
import Testing
@testable import Transport

/// The kernel's view of a pipe's connection, which the worker trusts when libnng 1.5.2's TLS
/// layer misses the end of one.
@Suite(.timeLimit(.minutes(1)))
struct ConnectionProbeTests {
    /// Lines as Linux writes them (an IPv4 table and an IPv6 one): port 0x9C40 = 40000 to
    /// 0x1D4C = 7500 established, the same ports in TIME_WAIT (06) and CLOSE_WAIT (08).
    static let ipv4 = """
          sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
           0: 00000000:1D4C 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
           1: 0100007F:9C40 0100007F:1D4C 01 00000000:00000000 02:000A0F5B 00000000     0        0 2 1 0 20 4 30 10 -1
           2: 0100007F:9C41 0100007F:1D4C 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0
           3: 0100007F:9C42 0100007F:1D4C 08 00000000:00000000 00:00000000 00000000     0        0 4 1 0 20 4 30 10 -1
        """
    static let ipv6 = """
          sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
           0: 00000000000000000000000001000000:9C43 00000000000000000000000001000000:1D4C 01 00000000:00000000 00:00000000 00000000     0        0 5 1 0 20 4 30 10 -1
        """

    @Test func onlyAnEstablishedConnectionBetweenBothPortsCountsAsOpen() {
        #expect(ConnectionProbe.listsOpen(Self.ipv4, local: 40000, remote: 7500))
        #expect(!ConnectionProbe.listsOpen(Self.ipv4, local: 40001, remote: 7500), "TIME_WAIT carries nothing more")
        #expect(!ConnectionProbe.listsOpen(Self.ipv4, local: 40002, remote: 7500), "CLOSE_WAIT: the peer has gone")
        #expect(!ConnectionProbe.listsOpen(Self.ipv4, local: 40000, remote: 7501), "another peer port")
        #expect(!ConnectionProbe.listsOpen(Self.ipv4, local: 7500, remote: 0), "a listener is not a connection")
        #expect(ConnectionProbe.listsOpen(Self.ipv6, local: 40003, remote: 7500))
        #expect(!ConnectionProbe.listsOpen(Self.ipv6, local: 40003, remote: 7501))
        #expect(!ConnectionProbe.listsOpen(Self.ipv6, local: 40004, remote: 7500))
    }

    /// /proc/net/tcp is read to its end (Foundation stops after the first page of a /proc
    /// file): every line `cat` would print.
    @Test func procTablesAreReadWhole() throws {
        let text = try #require(ConnectionProbe.readWhole("/proc/self/maps"))
        let lines = text.split(separator: "\n").count
        #expect(lines > 60 && text.utf8.count > 4096, "\(lines) lines, \(text.utf8.count) bytes of this process's memory map")
        #expect(text.hasSuffix("\n"))
    }

    /// A real connection is open while both ends are, and gone (not established) once the
    /// listening side has closed.
    @Test func aRealConnectionIsOpenThenGone() async throws {
        let rep = try Socket(.rep)
        let url = try rep.listen("tcp://127.0.0.1:0", maxMessageSize: 1024).url
        let req = try Socket(.req)
        defer { req.close() }
        try req.dial(url, maxMessageSize: 1024)
        var events = req.pipeEvents.makeAsyncIterator()
        let added = try #require(await events.next())
        #expect(added.kind == .added)
        let ports = try #require(ConnectionProbe.ports(of: added.pipe))
        #expect(url.hasSuffix(":\(ports.remote)"))
        #expect(ConnectionProbe.state(of: ports) == .open)
        rep.close()
        let deadline = Date().addingTimeInterval(20)
        while ConnectionProbe.state(of: ports) == .open, Date() < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(ConnectionProbe.state(of: ports) == .gone)
        #expect(ConnectionProbe.state(of: ports, tables: ["/nonexistent"]) == .unknown)
    }
}
