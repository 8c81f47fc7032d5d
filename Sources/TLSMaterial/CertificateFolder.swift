import Crypto
import Foundation
import SwiftASN1
import Transport
import X509

/// A run's TLS material, as `csptrain certs init` writes it and the coordinator and workers read it:
///
/// ```
/// DIR/ca.pem                 the run's CA certificate: every worker and the coordinator trust it
/// DIR/coordinator.pem, .key  the coordinator's certificate (server auth; SANs from --hosts) and key
/// DIR/worker.pem, .key       the workers' certificate (client auth, for mutual TLS) and key
/// DIR/ca/ca.key              the CA's key: signs new certificates; never hand it to workers
/// ```
///
/// Keys are ECDSA P-256 in PKCS#8 PEM, mode 0600 (mbedTLS 2.28, which Debian's nng links, speaks
/// TLS 1.2 with such keys).
public struct CertificateFolder: Sendable {
    public static let caCertificate = "ca.pem"
    public static let coordinatorCertificate = "coordinator.pem"
    public static let coordinatorKey = "coordinator.key"
    public static let workerCertificate = "worker.pem"
    public static let workerKey = "worker.key"
    public static let caKey = "ca/ca.key"

    public let directory: URL

    public init(_ path: String) {
        directory = URL(fileURLWithPath: path).standardizedFileURL
    }

    func file(_ name: String) -> URL { directory.appendingPathComponent(name) }

    // MARK: Reading

    /// The coordinator's side: its certificate and key, and the CA to check workers against.
    public func serverConfig(requireClientCert: Bool) throws -> TLSConfig {
        let ca = try read(Self.caCertificate)
        let cert = try read(Self.coordinatorCertificate)
        let key = try read(Self.coordinatorKey)
        do {
            return try TLSConfig(role: .server, caPEM: ca, certificatePEM: cert, keyPEM: key,
                                 verify: requireClientCert ? .required : .none)
        } catch {
            throw CertificateError("\(directory.path): the coordinator's TLS material was refused (\(error)); make it again with `csptrain certs init`")
        }
    }

    /// A worker's side: the CA that signed the coordinator's certificate, which must name
    /// `serverName` (the host the worker dials), and the worker's own certificate and key when
    /// the folder holds them (needed when the coordinator requires client certificates).
    public func clientConfig(serverName: String) throws -> TLSConfig {
        let ca = try read(Self.caCertificate)
        let hasOwn = FileManager.default.fileExists(atPath: file(Self.workerCertificate).path)
        let cert = hasOwn ? try read(Self.workerCertificate) : nil
        let key = hasOwn ? try read(Self.workerKey) : nil
        do {
            return try TLSConfig(role: .client, caPEM: ca, certificatePEM: cert, keyPEM: key,
                                 verify: .required, serverName: serverName)
        } catch {
            throw CertificateError("\(directory.path): the worker's TLS material was refused (\(error)); make it again with `csptrain certs init`")
        }
    }

    /// One line per certificate of the folder that expires within `days` (or has expired), for
    /// a warning at start. Files that are absent are skipped.
    public func expiryWarnings(now: Date = Date(), withinDays days: Int) throws -> [String] {
        var lines: [String] = []
        for name in [Self.caCertificate, Self.coordinatorCertificate, Self.workerCertificate]
        where FileManager.default.fileExists(atPath: file(name).path) {
            let certificate: Certificate
            do { certificate = try Certificate(pemEncoded: try read(name)) } catch let error as CertificateError {
                throw error
            } catch {
                throw CertificateError("\(file(name).path): not a PEM certificate (\(error))")
            }
            let left = certificate.notValidAfter.timeIntervalSince(now) / 86_400
            if left <= 0 {
                lines.append("\(file(name).path) expired on \(certificate.notValidAfter): TLS handshakes will fail; make new certificates with `csptrain certs init`")
            } else if left < Double(days) {
                lines.append("\(file(name).path) expires in \(String(format: "%.1f", left)) days (\(certificate.notValidAfter)); make new certificates with `csptrain certs init` before then")
            }
        }
        return lines
    }

    func read(_ name: String) throws -> String {
        let url = file(name)
        do { return try String(contentsOf: url, encoding: .utf8) } catch {
            throw CertificateError("cannot read \(url.path): \(error.localizedDescription) (a TLS folder is made by `csptrain certs init --out DIR`)")
        }
    }
}

/// A TLS file that is missing, unreadable or refused.
public struct CertificateError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
