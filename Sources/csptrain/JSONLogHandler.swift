import FileIO
import Foundation
import Logging

/// `--log-format json`: one JSON object per line on standard error, for log collectors (Loki,
/// Elasticsearch, CloudWatch). The fixed fields come first in every object: `timestamp`
/// (ISO 8601, UTC, milliseconds), `level`, `label`, `message`, `source`, `file`, `line`; then
/// every metadata key as a field of its own (a key that collides with a fixed one is prefixed
/// with `metadata.`).
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    static let fixed: Set<String> = ["timestamp", "level", "label", "message", "source", "file", "line"]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        StandardError.write(Self.line(level: event.level, label: label, message: "\(event.message)", metadata: merged,
                                      source: event.source, file: event.file, line: event.line, date: Date()) + "\n")
    }

    static func line(level: Logger.Level, label: String, message: String, metadata: Logger.Metadata, source: String,
                     file: String, line: UInt, date: Date) -> String {
        var fields: [(String, String)] = [
            ("timestamp", quote(timestamp(date))), ("level", quote(level.rawValue)), ("label", quote(label)),
            ("message", quote(message)), ("source", quote(source)), ("file", quote(file)), ("line", String(line)),
        ]
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
            fields.append((fixed.contains(key) ? "metadata.\(key)" : key, json(value)))
        }
        return "{" + fields.map { quote($0.0) + ":" + $0.1 }.joined(separator: ",") + "}"
    }

    static func json(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case let .string(s): quote(s)
        case let .stringConvertible(c): quote(c.description)
        case let .array(a): "[" + a.map(json).joined(separator: ",") + "]"
        case let .dictionary(d): "{" + d.sorted { $0.key < $1.key }.map { quote($0.key) + ":" + json($0.value) }.joined(separator: ",") + "}"
        }
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case let c where c.value < 0x20: out += String(format: "\\u%04x", c.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    static func timestamp(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970)
        var parts = tm()
        gmtime_r(&t, &parts)
        let ms = Int((date.timeIntervalSince1970 - Double(t)) * 1000)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
                      parts.tm_hour, parts.tm_min, parts.tm_sec, max(0, min(999, ms)))
    }
}
