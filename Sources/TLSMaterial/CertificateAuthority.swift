import Crypto
import FileIO
import Foundation
import SwiftASN1
import X509

/// Makes a run's TLS material (`csptrain certs init`): a CA, a coordinator certificate and a
/// worker certificate, all ECDSA P-256 signed with SHA-256.
public enum CertificateAuthority {
    /// - Parameters:
    ///   - hosts: names and IP addresses workers dial the coordinator by; each goes into the
    ///     coordinator certificate's subject alternative names. An IP address goes in both as an
    ///     IP and as a DNS name: mbedTLS 2.28 (Debian's nng) matches the dialed host against DNS
    ///     names only.
    ///   - days: validity of the coordinator and worker certificates (the CA gets the same).
    /// - Returns: the files written, relative to the folder.
    @discardableResult
    public static func initFolder(_ folder: CertificateFolder, hosts: [String], days: Int, now: Date = Date()) throws -> [String] {
        guard days >= 1 else { throw CertificateError("--days \(days): certificates must be valid for at least one day") }
        guard !hosts.isEmpty else { throw CertificateError("--hosts: give at least one name or address the workers dial") }
        let fm = FileManager.default
        for name in [CertificateFolder.caCertificate, CertificateFolder.caKey] where fm.fileExists(atPath: folder.file(name).path) {
            throw CertificateError("\(folder.file(name).path) exists: a run's CA is made once (remove the folder to start over, or give another --out)")
        }
        try fm.createDirectory(at: folder.directory, withIntermediateDirectories: true)
        try fm.createDirectory(at: folder.file("ca"), withIntermediateDirectories: true,
                               attributes: [.posixPermissions: 0o700])

        let notBefore = now.addingTimeInterval(-300)  // clocks a little behind still accept it
        let notAfter = now.addingTimeInterval(Double(days) * 86_400)
        let caKey = P256.Signing.PrivateKey()
        let caName = try DistinguishedName {
            OrganizationName("csptrain")
            CommonName("csptrain run CA")
        }
        let ca = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(caKey.publicKey),
            notValidBefore: notBefore, notValidAfter: notAfter, issuer: caName, subject: caName,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: .init(caKey))

        func leaf(_ commonName: String, usage: ExtendedKeyUsage.Usage, names: [GeneralName]) throws -> (Certificate, P256.Signing.PrivateKey) {
            let key = P256.Signing.PrivateKey()
            let subject = try DistinguishedName {
                OrganizationName("csptrain")
                CommonName(commonName)
            }
            let extensions = try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyAgreement: true))
                try ExtendedKeyUsage([usage])
                if !names.isEmpty { SubjectAlternativeNames(names) }
            }
            let cert = try Certificate(
                version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
                notValidBefore: notBefore, notValidAfter: notAfter, issuer: caName, subject: subject,
                signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions, issuerPrivateKey: .init(caKey))
            return (cert, key)
        }

        var names: [GeneralName] = []
        for host in hosts {
            if let ip = ipAddressBytes(host) {
                names.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(ip))))
            }
            names.append(.dnsName(host))
        }
        let (coordinator, coordinatorKey) = try leaf(hosts[0], usage: .serverAuth, names: names)
        let (worker, workerKey) = try leaf("csptrain worker", usage: .clientAuth, names: [])

        try write(folder, CertificateFolder.caKey, caKey.pemRepresentation, mode: 0o600)
        try write(folder, CertificateFolder.caCertificate, ca.serializeAsPEM().pemString, mode: 0o644)
        try write(folder, CertificateFolder.coordinatorCertificate, coordinator.serializeAsPEM().pemString, mode: 0o644)
        try write(folder, CertificateFolder.coordinatorKey, coordinatorKey.pemRepresentation, mode: 0o600)
        try write(folder, CertificateFolder.workerCertificate, worker.serializeAsPEM().pemString, mode: 0o644)
        try write(folder, CertificateFolder.workerKey, workerKey.pemRepresentation, mode: 0o600)
        return [CertificateFolder.caCertificate, CertificateFolder.coordinatorCertificate, CertificateFolder.coordinatorKey,
                CertificateFolder.workerCertificate, CertificateFolder.workerKey, CertificateFolder.caKey]
    }

    /// Writes a file atomically, created with its final mode (a key is never readable by others,
    /// not even briefly).
    static func write(_ folder: CertificateFolder, _ name: String, _ text: String, mode: mode_t) throws {
        do { try AtomicFile.write(text, to: folder.file(name).path, mode: mode) } catch {
            throw CertificateError("cannot write \(folder.file(name).path): \(error)")
        }
    }

    /// The 4 or 16 bytes of an IPv4 or IPv6 address; nil for a host name.
    static func ipAddressBytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }
}
