import Foundation

/// The voice-assistant command domain: sentence templates with {slot} names and slot values
/// (Configs/voice-commands.txt).
public struct CommandDomain: Sendable {
    public let templates: [String]
    public let slots: [String: [String]]

    public init(file: String) throws {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
            throw DatasetError(file: file, line: nil, message: "cannot read the command domain")
        }
        var templates: [String] = [], slots: [String: [String]] = [:]
        var section = ""
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("## ") { section = String(line.dropFirst(3)); continue }
            if line.isEmpty || line.hasPrefix("#") { continue }
            switch section {
            case "templates": templates.append(line)
            case "slots":
                let parts = line.split(separator: ":", maxSplits: 1)
                guard parts.count == 2 else { throw DatasetError(file: file, line: n + 1, message: "expected 'slot: value | value'") }
                slots[parts[0].trimmingCharacters(in: .whitespaces)] = parts[1].split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            default:
                throw DatasetError(file: file, line: n + 1, message: "text outside the '## templates' and '## slots' sections")
            }
        }
        for t in templates {
            for slot in Self.slotNames(t) where slots[slot] == nil {
                throw DatasetError(file: file, line: nil, message: "template '\(t)' uses {\(slot)}, which has no values")
            }
        }
        self.templates = templates
        self.slots = slots
    }

    static func slotNames(_ template: String) -> [String] {
        var names: [String] = []
        var rest = Substring(template)
        while let open = rest.firstIndex(of: "{"), let close = rest[open...].firstIndex(of: "}") {
            names.append(String(rest[rest.index(after: open) ..< close]))
            rest = rest[rest.index(after: close)...]
        }
        return names
    }

    /// Every sentence the domain can produce, in a fixed order.
    public func allSentences() -> [String] {
        var out: [String] = []
        for t in templates {
            var partial = [t]
            for slot in Self.slotNames(t) {
                partial = partial.flatMap { s in slots[slot]!.map { s.replacingOccurrences(of: "{\(slot)}", with: $0, options: [], range: s.range(of: "{\(slot)}")) } }
            }
            out += partial.map(Transcript.normalize)
        }
        return Array(Set(out)).sorted()
    }
}
