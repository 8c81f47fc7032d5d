/// Edit-distance counts of an evaluation batch; rates are ratios of sums over batches.
public struct EvaluationCounts: Sendable, Equatable, Codable {
    public var wordEdits = 0
    public var words = 0
    public var characterEdits = 0
    public var characters = 0
    public var utterances = 0

    public init(wordEdits: Int = 0, words: Int = 0, characterEdits: Int = 0, characters: Int = 0, utterances: Int = 0) {
        self.wordEdits = wordEdits
        self.words = words
        self.characterEdits = characterEdits
        self.characters = characters
        self.utterances = utterances
    }

    public mutating func add(_ other: EvaluationCounts) {
        wordEdits += other.wordEdits
        words += other.words
        characterEdits += other.characterEdits
        characters += other.characters
        utterances += other.utterances
    }

    public var wordErrorRate: Double { words == 0 ? 0 : Double(wordEdits) / Double(words) }
    public var characterErrorRate: Double { characters == 0 ? 0 : Double(characterEdits) / Double(characters) }
}
