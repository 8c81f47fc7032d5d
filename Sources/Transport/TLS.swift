import CNNG

/// An nng TLS configuration (`nng_tls_config`) for the `tls+tcp://` transport.
///
/// `@unchecked Sendable`: a tiny wrapper of a C handle that is only written while it is built,
/// before any endpoint holds it (nng then places its own hold and only reads it).
///
/// Debian's libnng 1.5 links mbedTLS 2.28: TLS 1.2, with ECDSA P-256 or RSA keys. The minimum
/// version is pinned to 1.2.
public final class TLSConfig: @unchecked Sendable {
    public enum Role: Sendable { case server, client }

    /// How a peer's certificate is checked.
    public enum PeerVerification: Sendable {
        /// No certificate asked for or checked (a server that does not require client certificates).
        case none
        /// A certificate signed by one of the configured CAs is required; the handshake fails otherwise.
        case required
    }

    let handle: OpaquePointer
    public let role: Role

    /// - Parameters:
    ///   - caPEM: the CA certificates peers' certificates must chain to (nil: no CA; only for a
    ///     server with `verify: .none`).
    ///   - certificatePEM/keyPEM: this side's certificate and unencrypted private key (a
    ///     server needs them; a client needs them when the server requires client certificates).
    ///   - serverName: clients only: the name the server's certificate must carry (a DNS or IP
    ///     subject alternative name). nil: the host of the dialed URL.
    public init(role: Role, caPEM: String?, certificatePEM: String?, keyPEM: String?,
                verify: PeerVerification, serverName: String? = nil) throws(NNGError) {
        var config: OpaquePointer?
        try nngCall("allocate a TLS \(role) configuration",
                    nng_tls_config_alloc(&config, role == .server ? NNG_TLS_MODE_SERVER : NNG_TLS_MODE_CLIENT))
        handle = config!
        self.role = role
        try nngCall("require TLS 1.2", nng_tls_config_version(handle, NNG_TLS_1_2, NNG_TLS_1_2))
        if let caPEM {
            try nngCall("load the CA certificate", nng_tls_config_ca_chain(handle, caPEM, nil))
        }
        if let certificatePEM, let keyPEM {
            try nngCall("load this side's certificate and key", nng_tls_config_own_cert(handle, certificatePEM, keyPEM, nil))
        }
        if let serverName {
            try nngCall("set the TLS server name to \(serverName)", nng_tls_config_server_name(handle, serverName))
        }
        try nngCall("set the TLS peer verification",
                    nng_tls_config_auth_mode(handle, verify == .required ? NNG_TLS_AUTH_MODE_REQUIRED : NNG_TLS_AUTH_MODE_NONE))
    }

    deinit {
        nng_tls_config_free(handle)
    }

    /// The URL's scheme is TLS's (`tls+tcp://`, `tls+tcp4://`, `tls+tcp6://`).
    public static func isTLS(_ url: String) -> Bool { url.hasPrefix("tls+tcp") }
}

/// TLS settings of a run (YAML `transport.tls`; `--tls DIR` sets `dir`).
public struct TLSSettings: Sendable, Equatable {
    /// A folder made by `csptrain certs init`: `ca.pem`, `coordinator.pem`/`.key`,
    /// `worker.pem`/`.key`. Empty: no TLS (plain `tcp://`).
    public var dir = ""
    /// Mutual TLS: the coordinator refuses, at the handshake, any worker without a certificate
    /// signed by the run's CA (it never reaches the token check).
    public var requireClientCert = false
    /// Warn at start when a certificate expires within this many days.
    public var expiryWarningDays = 14

    public init() {}
}
