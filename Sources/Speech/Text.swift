/// Transcript normalisation and the character vocabulary.
///
/// Text is lower-case letters, single spaces and the apostrophe; everything else becomes a word
/// break. The vocabulary is the CTC blank (0), space (1), apostrophe (2) and a–z (3…28).
public enum Transcript {
    /// "Turn the LIGHTS on!" → "turn the lights on"; "what’s" → "what's".
    public static func normalize(_ text: String) -> String {
        var out = ""
        var pendingSpace = false
        for scalar in text.lowercased().unicodeScalars {
            let c: Character?
            switch scalar {
            case "a" ... "z": c = Character(scalar)
            case "'", "\u{2019}", "\u{2018}", "`": c = "'"
            default: c = nil
            }
            if let c {
                if pendingSpace, !out.isEmpty { out.append(" ") }
                pendingSpace = false
                out.append(c)
            } else {
                pendingSpace = true
            }
        }
        return out
    }
}

public struct Vocabulary: Sendable, Equatable {
    /// Symbols by class index; index 0 is the blank and has no symbol.
    public let symbols: [Character]

    public static let characters = Vocabulary(symbols: [" ", "'"] + (UInt8(ascii: "a") ... UInt8(ascii: "z")).map { Character(UnicodeScalar($0)) })

    public init(symbols: [Character]) { self.symbols = symbols }

    /// Output classes including the blank.
    public var classes: Int { symbols.count + 1 }
    public static let blank = 0

    /// Class indices of a normalised transcript; characters outside the vocabulary are dropped.
    public func encode(_ text: String) -> [Int] {
        text.compactMap { c in symbols.firstIndex(of: c).map { $0 + 1 } }
    }

    public func decode(_ classes: [Int]) -> String {
        String(classes.compactMap { $0 > 0 && $0 <= symbols.count ? symbols[$0 - 1] : nil })
    }
}
