import ArgumentParser
import Foundation
import TLSMaterial

struct CertsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "certs",
        abstract: "Make the TLS material of a run.",
        subcommands: [Init.self]
    )

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a CA, a coordinator certificate and a worker certificate (ECDSA P-256, TLS 1.2).",
            discussion: """
            Writes into --out: ca.pem (give it to every worker), coordinator.pem + coordinator.key (the \
            coordinator's; its names are --hosts), worker.pem + worker.key (workers' client certificate \
            for mutual TLS), and ca/ca.key, the CA's key, which signs certificates and is never handed \
            to workers. Keys are mode 0600. Then: \
            csptrain coordinator --listen tls+tcp://0.0.0.0:7450 --tls DIR [--require-client-cert] ... and \
            csptrain worker --connect tls+tcp://HOST:7450 --tls DIR ... (HOST one of --hosts).
            """
        )

        @Option(help: ArgumentHelp("Folder to write (created).", valueName: "dir"))
        var out: String

        @Option(help: ArgumentHelp("Names and IP addresses workers dial the coordinator by, comma-separated (default: localhost, 127.0.0.1 and this machine's name).", valueName: "name,ip,..."))
        var hosts: String?

        @Option(help: "Days the certificates are valid.")
        var days = 365

        func validate() throws {
            guard days >= 1 else { throw ValidationError("--days must be at least 1") }
            if let hosts, hosts.split(separator: ",").isEmpty { throw ValidationError("--hosts: give at least one name or address") }
        }

        func run() throws {
            let names = hosts.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
                ?? ["localhost", "127.0.0.1", ProcessInfo.processInfo.hostName]
            var seen = Set<String>()
            let unique = names.filter { seen.insert($0).inserted }
            let folder = CertificateFolder(out)
            do {
                let written = try CertificateAuthority.initFolder(folder, hosts: unique, days: days)
                try output("wrote \(written.map { folder.directory.appendingPathComponent($0).path }.joined(separator: ", "))")
                try output("coordinator certificate names: \(unique.joined(separator: ", ")); valid \(days) days. Keep ca/ca.key off the workers.")
            } catch let error as CertificateError {
                throw ValidationError(error.description)
            }
        }
    }
}
