/// Word and character error rates by Levenshtein distance, accumulated over a test set
/// (total edits / total reference length, as scoring tools report them).
public struct ErrorRates: Sendable, Equatable {
    public private(set) var wordEdits = 0
    public private(set) var words = 0
    public private(set) var characterEdits = 0
    public private(set) var characters = 0
    public private(set) var utterances = 0

    public init() {}

    public var wer: Double { words == 0 ? 0 : Double(wordEdits) / Double(words) }
    public var cer: Double { characters == 0 ? 0 : Double(characterEdits) / Double(characters) }

    public mutating func add(reference: String, hypothesis: String) {
        let r = reference.split(separator: " ").map(String.init), h = hypothesis.split(separator: " ").map(String.init)
        wordEdits += Self.editDistance(r, h)
        words += r.count
        characterEdits += Self.editDistance(Array(reference), Array(hypothesis))
        characters += reference.count
        utterances += 1
    }

    public mutating func merge(_ other: ErrorRates) {
        wordEdits += other.wordEdits
        words += other.words
        characterEdits += other.characterEdits
        characters += other.characters
        utterances += other.utterances
    }

    /// Substitutions + insertions + deletions turning `a` into `b`.
    public static func editDistance<T: Equatable>(_ a: [T], _ b: [T]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0 ... b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1 ... a.count {
            current[0] = i
            for j in 1 ... b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}
