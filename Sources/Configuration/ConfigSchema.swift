import Yams

/// Where a configuration value came from, for error messages.
public struct ConfigSource: Sendable, Equatable, CustomStringConvertible {
    public let name: String
    public init(_ name: String) { self.name = name }
    public var description: String { name }
}

/// A configuration error that names the file (or flag), the key and what was expected.
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public let source: String
    public let line: Int?
    public let key: String
    public let message: String

    public var description: String {
        let place = line.map { "\(source):\($0)" } ?? source
        return key.isEmpty ? "\(place): \(message)" : "\(place): \(key): \(message)"
    }
}

/// Reads and writes one value of the configuration.
protocol ConfigValue {
    static func parse(_ node: Node, at key: String, source: String) throws(ConfigError) -> Self
    var yaml: Node { get }
    /// What a valid value looks like, for error messages.
    static var expected: String { get }
}

func configError(_ node: Node?, _ key: String, _ source: String, _ message: String) -> ConfigError {
    ConfigError(source: source, line: node?.mark?.line, key: key, message: message)
}

func scalarText(_ node: Node) -> String {
    switch node {
    case let .scalar(s): "'\(s.string)'"
    case .mapping: "a mapping"
    case .sequence: "a list"
    case .alias: "an alias"
    }
}

extension Int: ConfigValue {
    static var expected: String { "a whole number" }
    static func parse(_ node: Node, at key: String, source: String) throws(ConfigError) -> Int {
        guard let v = node.int else { throw configError(node, key, source, "expected \(expected), found \(scalarText(node))") }
        return v
    }
    var yaml: Node { Node(String(self), .implicit) }
}

extension UInt64: ConfigValue {
    static var expected: String { "a non-negative whole number" }
    static func parse(_ node: Node, at key: String, source: String) throws(ConfigError) -> UInt64 {
        guard case let .scalar(s) = node, let v = UInt64(s.string) else {
            throw configError(node, key, source, "expected \(expected), found \(scalarText(node))")
        }
        return v
    }
    var yaml: Node { Node(String(self), .implicit) }
}

extension Double: ConfigValue {
    static var expected: String { "a number" }
    static func parse(_ node: Node, at key: String, source: String) throws(ConfigError) -> Double {
        guard let v = node.float ?? node.int.map(Double.init), v.isFinite else {
            throw configError(node, key, source, "expected \(expected), found \(scalarText(node))")
        }
        return v
    }
    var yaml: Node { Node(String(self), .implicit) }
}

extension String: ConfigValue {
    static var expected: String { "a string" }
    static func parse(_ node: Node, at key: String, source: String) throws(ConfigError) -> String {
        guard case let .scalar(s) = node else { throw configError(node, key, source, "expected \(expected), found \(scalarText(node))") }
        return s.string
    }
    var yaml: Node { Node(self, .implicit, .doubleQuoted) }
}

extension Bool: ConfigValue {
    static var expected: String { "true or false" }
    static func parse(_ node: Node, at key: String, source: String) throws(ConfigError) -> Bool {
        guard let v = node.bool else { throw configError(node, key, source, "expected \(expected), found \(scalarText(node))") }
        return v
    }
    var yaml: Node { Node(self ? "true" : "false", .implicit) }
}

/// Values a list may hold (`exclude: [...]`, `snapshots: [...]`).
protocol ConfigListElement: ConfigValue {
    /// The plural for errors ("strings", "numbers").
    static var plural: String { get }
}

extension String: ConfigListElement { static var plural: String { "strings" } }
extension Double: ConfigListElement { static var plural: String { "numbers" } }

extension Array: ConfigValue where Element: ConfigListElement {
    static var expected: String { "a list of \(Element.plural)" }
    static func parse(_ node: Node, at key: String, source: String) throws(ConfigError) -> [Element] {
        guard case let .sequence(items) = node else {
            throw configError(node, key, source, "expected \(expected), found \(scalarText(node))")
        }
        var out: [Element] = []
        for item in items {
            guard case .scalar = item else { throw configError(item, key, source, "expected \(expected), found \(scalarText(item))") }
            out.append(try Element.parse(item, at: key, source: source))
        }
        return out
    }
    var yaml: Node { .sequence(Node.Sequence(map(\.yaml), .implicit, .flow)) }
}

/// String-backed enums: the error lists every allowed value.
protocol ConfigEnum: ConfigValue, RawRepresentable<String>, CaseIterable {}

extension ConfigEnum {
    static var expected: String { "one of " + allCases.map(\.rawValue).joined(separator: ", ") }
    static func parse(_ node: Node, at key: String, source: String) throws(ConfigError) -> Self {
        guard let s = node.string, let v = Self(rawValue: s) else {
            throw configError(node, key, source, "expected \(expected), found \(scalarText(node))")
        }
        return v
    }
    var yaml: Node { Node(rawValue, .implicit) }
}

/// One key of a section: how to read it, write it and check it.
struct ConfigField<Root> {
    let key: String
    let help: String
    let read: (inout Root, Node, _ path: String, _ source: String) throws(ConfigError) -> Void
    let write: (Root) -> Node

    init<V: ConfigValue>(_ key: String, _ path: WritableKeyPath<Root, V>, _ help: String,
                         check: ((V) -> String?)? = nil) {
        self.key = key
        self.help = help
        read = { root, node, fullKey, source throws(ConfigError) in
            let value = try V.parse(node, at: fullKey, source: source)
            if let problem = check?(value) { throw configError(node, fullKey, source, problem) }
            root[keyPath: path] = value
        }
        write = { $0[keyPath: path].yaml }
    }
}

/// A mapping of fields; unknown keys are errors that list the known ones.
protocol ConfigSection: ConfigValue {
    init()
    static var fields: [ConfigField<Self>] { get }
}

extension ConfigSection {
    static var expected: String { "a mapping with keys " + fields.map(\.key).joined(separator: ", ") }

    static func parse(_ node: Node, at key: String, source: String) throws(ConfigError) -> Self {
        var section = Self()
        guard case let .mapping(mapping) = node else {
            throw configError(node, key, source, "expected \(expected), found \(scalarText(node))")
        }
        let known = fields
        for (k, v) in mapping {
            guard let name = k.string else { throw configError(k, key, source, "keys must be plain strings") }
            let fullKey = key.isEmpty ? name : "\(key).\(name)"
            guard let field = known.first(where: { $0.key == name }) else {
                throw configError(k, fullKey, source,
                                  "unknown key; expected one of: " + known.map(\.key).joined(separator: ", "))
            }
            try field.read(&section, v, fullKey, source)
        }
        return section
    }

    var yaml: Node {
        Node(Self.fields.map { (Node($0.key), $0.write(self)) })
    }
}

// Checks shared by the schema.
func positive<T: Comparable & ExpressibleByIntegerLiteral>(_ v: T) -> String? { v > 0 ? nil : "must be greater than 0" }
func nonNegative<T: Comparable & ExpressibleByIntegerLiteral>(_ v: T) -> String? { v >= 0 ? nil : "must not be negative" }
func unitInterval(_ v: Double) -> String? { v >= 0 && v < 1 ? nil : "must be in [0, 1)" }
