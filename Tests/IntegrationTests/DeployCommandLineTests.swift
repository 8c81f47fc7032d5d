import Foundation
import Testing
@testable import csptrain

/// Every `csptrain …` command line in Deploy/ (Kubernetes args, systemd ExecStart, the Slurm
/// script, the Dockerfile, Deploy/README.md) parses with the CLI's own parser, `validate()`
/// included: a renamed or removed option fails here, not on a cluster.
@Suite struct DeployCommandLineTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func text(_ path: String) throws -> String {
        try String(contentsOf: root.appendingPathComponent(path), encoding: .utf8)
    }

    /// Kubernetes: each container's `args: [...]` (a flow sequence of double-quoted strings,
    /// which is JSON once its comments are gone).
    static func kubernetesCommands() throws -> [[String]] {
        var out: [[String]] = []
        let lines = try text("Deploy/kubernetes/csptrain.yaml").components(separatedBy: "\n")
        var i = 0
        while i < lines.count {
            if let start = lines[i].range(of: "args: [") {
                var flow = String(lines[i][start.upperBound...])
                while !flow.contains("]"), i + 1 < lines.count {
                    i += 1
                    flow += " " + lines[i].trimmingCharacters(in: .whitespaces)
                }
                let json = "[" + flow.components(separatedBy: "\n").map { $0.components(separatedBy: " #")[0] }.joined()
                out.append(try JSONDecoder().decode([String].self, from: Data(json.prefix { $0 != "]" }.appending("]").utf8)))
            }
            i += 1
        }
        return out
    }

    /// systemd: ExecStart lines, with the unit's environment substituted.
    static func systemdCommands() throws -> [[String]] {
        try ["Deploy/systemd/csptrain-coordinator.service", "Deploy/systemd/csptrain-worker@.service"].flatMap { path in
            try text(path).components(separatedBy: "\n").filter { $0.hasPrefix("ExecStart=") }.map { line in
                let words = line.dropFirst("ExecStart=".count).replacingOccurrences(of: "${COORDINATOR}", with: "tls+tcp://127.0.0.1:7450")
                    .replacingOccurrences(of: "%H-%i", with: "host-1").split(separator: " ").map(String.init)
                return Array(words.dropFirst())  // /usr/local/bin/csptrain
            }
        }
    }

    /// The Slurm script: each `"$CSPTRAIN" …` command, continuation lines joined, the script's
    /// variables given sample values and its optional argument arrays in both forms.
    static func slurmCommands() throws -> [[String]] {
        let script = try text("Deploy/slurm/csptrain.sbatch").replacingOccurrences(of: "\\\n", with: " ")
        var out: [[String]] = []
        for line in script.components(separatedBy: "\n") {
            guard let start = line.range(of: "\"$CSPTRAIN\" ") else { continue }
            for tls in [false, true] {
                let values = [
                    "\"${coordinator_tls[@]}\"": tls ? "--tls /tls --require-client-cert" : "",
                    "\"${worker_tls[@]}\"": tls ? "--tls /tls" : "",
                    "\"${config_args[@]}\"": "--config run.yaml",
                    "$scheme": tls ? "tls+tcp" : "tcp", "$PORT": "7450", "$RUN_DIR": "/runs/r", "$head_node": "node1",
                ]
                var command = String(line[start.upperBound...])
                for (k, v) in values { command = command.replacingOccurrences(of: k, with: v) }
                command = command.replacingOccurrences(of: "\"", with: "").replacingOccurrences(of: "&", with: "")
                out.append(command.split(separator: " ").map(String.init))
            }
        }
        return out
    }

    /// Deploy/README.md: the lines of its code blocks that start with `csptrain `.
    static func readmeCommands() throws -> [[String]] {
        var inCode = false
        var out: [[String]] = []
        for line in try text("Deploy/README.md").components(separatedBy: "\n") {
            if line.hasPrefix("```") { inCode.toggle(); continue }
            let t = line.trimmingCharacters(in: .whitespaces)
            if inCode, t.hasPrefix("csptrain ") { out.append(t.split(separator: " ").dropFirst().map(String.init)) }
        }
        return out
    }

    @Test func everyDeployCommandLineParses() throws {
        let k8s = try Self.kubernetesCommands(), systemd = try Self.systemdCommands()
        let slurm = try Self.slurmCommands(), readme = try Self.readmeCommands()
        #expect(k8s.count == 2 && systemd.count == 2 && slurm.count == 4 && readme.count >= 2,
                "found \(k8s.count) Kubernetes, \(systemd.count) systemd, \(slurm.count) Slurm, \(readme.count) README command lines")
        for arguments in k8s + systemd + slurm + readme {
            #expect(throws: Never.self, "\(arguments.joined(separator: " "))") {
                _ = try CSPTrain.parseAsRoot(arguments)
            }
        }
        // The parser does refuse what is not csptrain's.
        #expect(throws: (any Error).self) { _ = try CSPTrain.parseAsRoot(["coordinator", "--listen", "tcp://x:1", "--run-dir", "r", "--no-such-option"]) }
    }
}
