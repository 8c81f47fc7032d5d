import Foundation
import Testing
@testable import Transport

/// The kernel's view of a pipe's connection, which the worker trusts when libnng 1.5.2's TLS
/// layer misses the end of one.
@Suite(.timeLimit(.minutes(1)))
struct ConnectionProbeTests {
    /// Lines as Linux writes them (an IPv4 table and an IPv6 one): port 0x9C40 = 40000 to
    /// 0x1D4C = 7500 established, the next two ports in TIME_WAIT (06) and CLOSE_WAIT (08).
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

    @Test func theStateOfTheConnectionBetweenBothPortsIsRead() {
        #expect(ConnectionProbe.listedStates(Self.ipv4, local: 40000, remote: 7500) == ["01"])
        #expect(ConnectionProbe.listedStates(Self.ipv4, local: 40001, remote: 7500) == ["06"], "TIME_WAIT")
        #expect(ConnectionProbe.listedStates(Self.ipv4, local: 40002, remote: 7500) == ["08"], "CLOSE_WAIT: the peer has gone")
        #expect(ConnectionProbe.listedStates(Self.ipv4, local: 40000, remote: 7501) .isEmpty, "another peer port")
        #expect(ConnectionProbe.listedStates(Self.ipv4, local: 7500, remote: 0) == ["0A"], "a listener (never a pipe's ports)")
        #expect(ConnectionProbe.listedStates(Self.ipv6, local: 40003, remote: 7500) == ["01"])
        #expect(ConnectionProbe.listedStates(Self.ipv6, local: 40003, remote: 7501) .isEmpty)
        #expect(ConnectionProbe.listedStates(Self.ipv6, local: 40004, remote: 7500) .isEmpty)
    }

    /// A connection listed in a closing state is gone even if the probe never saw it open (it
    /// may have lived less than a probe interval); one not listed at all only if it was seen
    /// open, since some sandboxes list none of a process's connections.
    @Test func aClosingConnectionIsGoneAndAnAbsentOneOnlyOnceSeenOpen() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("probe-\(UInt64.random(in: 0 ... .max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let v4 = dir.appendingPathComponent("tcp").path, v6 = dir.appendingPathComponent("tcp6").path
        try Self.ipv4.write(toFile: v4, atomically: true, encoding: .utf8)
        try Self.ipv6.write(toFile: v6, atomically: true, encoding: .utf8)
        func state(_ local: UInt16) -> ConnectionProbe.State {
            ConnectionProbe.state(of: .init(local: local, remote: 7500), tables: [v4, v6])
        }
        #expect(state(40000) == .open && state(40003) == .open)
        #expect(state(40001) == .closing && state(40002) == .closing)
        #expect(state(40009) == .absent)
        // The same port pair closing towards an old address and established towards a new one
        // (Linux lets one local port reach two destinations): open wins, whatever the order.
        let mixed = dir.appendingPathComponent("mixed").path
        try """
              sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
               0: 0100007F:9C50 0200007F:1D4C 08 00000000:00000000 00:00000000 00000000     0        0 4 1 0 20 4 30 10 -1
               1: 0100007F:9C50 0300007F:1D4C 01 00000000:00000000 00:00000000 00000000     0        0 5 1 0 20 4 30 10 -1
            """.write(toFile: mixed, atomically: true, encoding: .utf8)
        #expect(ConnectionProbe.state(of: .init(local: 40016, remote: 7500), tables: [mixed]) == .open)
        #expect(ConnectionProbe.state(of: .init(local: 40000, remote: 7500), tables: ["/nonexistent"]) == .unknown)
        #expect(ConnectionProbe.State.closing.isGone(seenOpen: false))
        #expect(!ConnectionProbe.State.absent.isGone(seenOpen: false) && ConnectionProbe.State.absent.isGone(seenOpen: true))
        #expect(!ConnectionProbe.State.open.isGone(seenOpen: true) && !ConnectionProbe.State.unknown.isGone(seenOpen: true))
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
        #expect(ConnectionProbe.state(of: ports).isGone(seenOpen: true))
    }
}
