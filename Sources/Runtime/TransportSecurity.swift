import Foundation
import Logging
import TLSMaterial
import Transport

/// Which TLS configuration an endpoint gets, from its URL and the run's TLS folder, and the
/// warnings a person should see at start: plain TCP beyond this machine, certificates near expiry.
public enum TransportSecurity {
    /// The coordinator's listener: a server configuration for `tls+tcp://`, nil for other URLs.
    static func server(url: String, settings: TLSSettings, logger: Logger) throws -> TLSConfig? {
        guard TLSConfig.isTLS(url) else {
            guard settings.dir.isEmpty else {
                throw RunFolderError("transport.tls.dir (--tls) is \(settings.dir), but --listen \(url) is not a TLS address: listen on tls+tcp://HOST:PORT, or drop --tls")
            }
            warnIfPlain(url, role: "listening", logger: logger)
            return nil
        }
        guard !settings.dir.isEmpty else {
            throw RunFolderError("--listen \(url) is a TLS address, but no certificate folder is given: add --tls DIR (or transport.tls.dir in the YAML); make one with `csptrain certs init --out DIR --hosts NAME,IP`")
        }
        let folder = CertificateFolder(settings.dir)
        try warnNearExpiry(folder, days: settings.expiryWarningDays, logger: logger)
        let config = try folder.serverConfig(requireClientCert: settings.requireClientCert)
        logger.info("TLS on", metadata: ["dir": "\(folder.directory.path)", "client_certificates": "\(settings.requireClientCert ? "required (mutual TLS)" : "not asked for")"])
        return config
    }

    /// A worker's dialer: a client configuration for `tls+tcp://` (checking that the coordinator's
    /// certificate names the dialed host), nil for other URLs.
    public static func client(url: String, dir: String?, logger: Logger) throws -> TLSConfig? {
        guard TLSConfig.isTLS(url) else {
            if let dir { throw WorkerError("--tls \(dir) is given, but --connect \(url) is not a TLS address: connect to tls+tcp://HOST:PORT, or drop --tls") }
            warnIfPlain(url, role: "connecting", logger: logger)
            return nil
        }
        guard let dir else {
            throw WorkerError("--connect \(url) is a TLS address, but no certificate folder is given: add --tls DIR holding the run's ca.pem (and worker.pem/worker.key when the coordinator requires client certificates)")
        }
        let folder = CertificateFolder(dir)
        try warnNearExpiry(folder, days: 14, logger: logger)
        return try folder.clientConfig(serverName: host(of: url))
    }

    /// Plain `tcp://` to or on an address other than loopback: say what that exposes.
    static func warnIfPlain(_ url: String, role: String, logger: Logger) {
        guard url.hasPrefix("tcp"), !isLoopback(host(of: url)) else { return }
        logger.warning("""
            \(role) on plain \(url): gradients, weights and the join proof cross the network unencrypted and \
            unauthenticated, so anyone on the path can read the model or alter a step. Use tls+tcp:// with \
            --tls DIR (`csptrain certs init --out DIR --hosts NAME,IP`), or keep this port on a network you trust.
            """)
    }

    static func warnNearExpiry(_ folder: CertificateFolder, days: Int, logger: Logger) throws {
        for line in try folder.expiryWarnings(withinDays: days) { logger.warning("\(line)") }
    }

    /// The host of `scheme://host:port` (brackets of an IPv6 address removed).
    static func host(of url: String) -> String {
        guard let schemeEnd = url.range(of: "://") else { return url }
        var rest = String(url[schemeEnd.upperBound...])
        if let slash = rest.firstIndex(of: "/") { rest = String(rest[..<slash]) }
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
            return String(rest[rest.index(after: rest.startIndex) ..< close])
        }
        if let colon = rest.lastIndex(of: ":") { rest = String(rest[..<colon]) }
        return rest
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }
}
