import Testing
@testable import Runtime

/// Which addresses get the plain-TCP warning, and which host a worker's TLS checks.
struct TransportSecurityTests {
    @Test func hostOfAURL() {
        #expect(TransportSecurity.host(of: "tls+tcp://coordinator.example:7450") == "coordinator.example")
        #expect(TransportSecurity.host(of: "tcp://10.0.0.5:7450") == "10.0.0.5")
        #expect(TransportSecurity.host(of: "tls+tcp6://[fd00::1]:7450") == "fd00::1")
        #expect(TransportSecurity.host(of: "ipc:///tmp/x") == "")
    }

    @Test func loopbackIsExemptFromThePlainTCPWarning() {
        for host in ["127.0.0.1", "127.1.2.3", "localhost", "::1"] { #expect(TransportSecurity.isLoopback(host), "\(host)") }
        for host in ["0.0.0.0", "10.0.0.5", "coordinator.example", "fd00::1"] { #expect(!TransportSecurity.isLoopback(host), "\(host)") }
    }
}
