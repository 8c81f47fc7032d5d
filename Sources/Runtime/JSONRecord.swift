import Foundation

/// JSON for the run folder's records (metrics.jsonl, pruning.jsonl, summary.json): snake_case
/// keys in sorted order, and every number a JSON number or null.
///
/// JSON has no infinity or NaN. A non-finite value is written as null, and the record gets a
/// field naming each one: `{"grad_norm":null,"loss":0.7,"non_finite":["grad_norm"],...}`
/// (nested values by path: `layers[2].recovery_error`). Readers then see a valid number or an
/// explicit gap with its reason, never the strings "inf" or "nan".
enum JSONRecord {
    static let nonFiniteKey = "non_finite"

    static func encode(_ value: some Encodable, pretty: Bool = false) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys] : [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: sentinel, negativeInfinity: sentinel, nan: sentinel)
        let bytes = [UInt8](try encoder.encode(value))
        let scan = scan(bytes)
        guard !scan.sentinels.isEmpty else { return bytes }
        return rewrite(bytes, scan, pretty: pretty)
    }

    /// What the encoder writes for a non-finite value; no real string looks like it.
    static let sentinel = "__csptrain_non_finite_value__"
    private static let sentinelToken = Array("\"\(sentinel)\"".utf8)

    struct Scan {
        /// Byte ranges of the sentinel strings, and the path of each.
        var sentinels: [(range: Range<Int>, path: String)] = []
        /// The top-level keys and where each starts (its opening quote).
        var topKeys: [(name: String, start: Int)] = []
        /// Where the top-level object's closing brace is.
        var end = 0
    }

    /// One pass over the encoder's output, tracking the path (object keys, array indices).
    static func scan(_ b: [UInt8]) -> Scan {
        enum Frame { case object(key: String?), array(index: Int) }
        var result = Scan()
        var stack: [Frame] = []
        var expectingKey = false
        var i = 0
        while i < b.count {
            switch b[i] {
            case UInt8(ascii: "{"):
                stack.append(.object(key: nil))
                expectingKey = true
            case UInt8(ascii: "["):
                stack.append(.array(index: 0))
                expectingKey = false
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                _ = stack.popLast()
                if stack.isEmpty { result.end = i }
            case UInt8(ascii: ","):
                if case let .array(k)? = stack.last { stack[stack.count - 1] = .array(index: k + 1) } else { expectingKey = true }
            case UInt8(ascii: ":"):
                expectingKey = false
            case UInt8(ascii: "\""):
                var j = i + 1
                while j < b.count, b[j] != UInt8(ascii: "\"") { j += b[j] == UInt8(ascii: "\\") ? 2 : 1 }
                let token = i ..< min(j + 1, b.count)
                if expectingKey, case .object? = stack.last {
                    let name = String(decoding: b[(i + 1) ..< min(j, b.count)], as: UTF8.self)
                    stack[stack.count - 1] = .object(key: name)
                    if stack.count == 1 { result.topKeys.append((name, i)) }
                } else if b[token].elementsEqual(sentinelToken) {
                    result.sentinels.append((token, path(stack.map { frame -> String in
                        switch frame {
                        case let .object(key): "." + (key ?? "?")
                        case let .array(index): "[\(index)]"
                        }
                    })))
                }
                i = token.upperBound
                continue
            default:
                break
            }
            i += 1
        }
        return result
    }

    private static func path(_ parts: [String]) -> String {
        let joined = parts.joined()
        return joined.hasPrefix(".") ? String(joined.dropFirst()) : joined
    }

    /// Sentinels become null; the `non_finite` list goes in at its sorted place among the
    /// top-level keys.
    private static func rewrite(_ bytes: [UInt8], _ scan: Scan, pretty: Bool) -> [UInt8] {
        let paths = scan.sentinels.map(\.path)
        let list = "[" + paths.map { "\"\($0)\"" }.joined(separator: ",") + "]"
        let colon = pretty ? " : " : ":"
        var insertAt: Int
        var insertion: String
        if let next = scan.topKeys.first(where: { $0.name > nonFiniteKey }) {
            insertAt = next.start
            insertion = "\"\(nonFiniteKey)\"\(colon)\(list)," + (pretty ? "\n  " : "")
        } else {
            insertAt = scan.end
            while insertAt > 0, [UInt8(ascii: " "), UInt8(ascii: "\n")].contains(bytes[insertAt - 1]) { insertAt -= 1 }
            insertion = "," + (pretty ? "\n  " : "") + "\"\(nonFiniteKey)\"\(colon)\(list)"
        }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + insertion.utf8.count)
        var from = 0
        var edits = scan.sentinels.map { ($0.range, Array("null".utf8)) }
        edits.append((insertAt ..< insertAt, Array(insertion.utf8)))
        for (range, replacement) in edits.sorted(by: { $0.0.lowerBound < $1.0.lowerBound }) {
            out.append(contentsOf: bytes[from ..< range.lowerBound])
            out.append(contentsOf: replacement)
            from = range.upperBound
        }
        out.append(contentsOf: bytes[from...])
        return out
    }
}
