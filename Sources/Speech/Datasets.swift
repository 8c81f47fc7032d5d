import Foundation

/// One utterance of a data set: where its audio is and what was said.
public struct Utterance: Sendable, Equatable, Codable {
    public var audioPath: String
    /// Normalised transcript.
    public var text: String
    /// Seconds, when the source states it.
    public var duration: Double?

    public init(audioPath: String, text: String, duration: Double? = nil) {
        self.audioPath = audioPath
        self.text = text
        self.duration = duration
    }
}

public struct DatasetError: Error, CustomStringConvertible, Equatable {
    public let file: String
    public let line: Int?
    public let message: String
    public var description: String { line.map { "\(file):\($0): \(message)" } ?? "\(file): \(message)" }
}

/// NeMo-style JSONL manifests: one `{"audio_filepath": ..., "duration": ..., "text": ...}` per
/// line. Relative audio paths are resolved against the manifest's folder.
public enum Manifest {
    struct Line: Codable {
        var audio_filepath: String
        var duration: Double?
        var text: String
    }

    public static func read(_ path: String) throws(DatasetError) -> [Utterance] {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw DatasetError(file: path, line: nil, message: "cannot read the manifest: \(error.localizedDescription)")
        }
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent()
        var out: [Utterance] = []
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            guard !line.isEmpty else { continue }
            let entry: Line
            do { entry = try JSONDecoder().decode(Line.self, from: Data(line.utf8)) } catch {
                throw DatasetError(file: path, line: n + 1, message: "not a manifest entry (need audio_filepath and text): \(describe(error))")
            }
            let audio = entry.audio_filepath.hasPrefix("/") ? entry.audio_filepath
                : folder.appendingPathComponent(entry.audio_filepath).standardizedFileURL.path
            out.append(Utterance(audioPath: audio, text: Transcript.normalize(entry.text), duration: entry.duration))
        }
        return out
    }

    /// Writes a manifest with paths relative to its folder where possible.
    public static func write(_ utterances: [Utterance], to path: String) throws {
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().standardizedFileURL.path + "/"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var text = ""
        for u in utterances {
            let absolute = URL(fileURLWithPath: u.audioPath).standardizedFileURL.path
            let relative = absolute.hasPrefix(folder) ? String(absolute.dropFirst(folder.count)) : absolute
            let line = try encoder.encode(Line(audio_filepath: relative, duration: u.duration, text: u.text))
            text += String(decoding: line, as: UTF8.self) + "\n"
        }
        try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    static func describe(_ error: Error) -> String {
        switch error {
        case let DecodingError.keyNotFound(key, _): "missing key '\(key.stringValue)'"
        case let DecodingError.typeMismatch(_, context): "wrong type at '\(context.codingPath.map(\.stringValue).joined(separator: "."))'"
        case DecodingError.dataCorrupted: "invalid JSON"
        default: "\(error)"
        }
    }
}

/// The LibriSpeech layout: `<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`, transcripts in
/// `<speaker>/<chapter>/<speaker>-<chapter>.trans.txt` as "<id> <TEXT>" lines.
public enum LibriSpeech {
    public static func read(_ root: String) throws(DatasetError) -> [Utterance] {
        let fm = FileManager.default
        guard let speakers = try? fm.contentsOfDirectory(atPath: root) else {
            throw DatasetError(file: root, line: nil, message: "cannot list the folder (expected <speaker>/<chapter>/ subfolders)")
        }
        var out: [Utterance] = []
        for speaker in speakers.sorted() {
            let speakerDir = root + "/" + speaker
            guard let chapters = try? fm.contentsOfDirectory(atPath: speakerDir) else { continue }
            for chapter in chapters.sorted() {
                let dir = speakerDir + "/" + chapter
                let transcript = "\(dir)/\(speaker)-\(chapter).trans.txt"
                guard fm.fileExists(atPath: transcript) else { continue }
                guard let text = try? String(contentsOfFile: transcript, encoding: .utf8) else {
                    throw DatasetError(file: transcript, line: nil, message: "cannot read the transcript file")
                }
                for (n, line) in text.split(separator: "\n").enumerated() {
                    let parts = line.split(separator: " ", maxSplits: 1)
                    guard parts.count == 2 else {
                        throw DatasetError(file: transcript, line: n + 1, message: "expected '<utterance-id> <TEXT>'")
                    }
                    let id = String(parts[0])
                    let flac = "\(dir)/\(id).flac"
                    let audio = fm.fileExists(atPath: flac) ? flac : "\(dir)/\(id).wav"
                    out.append(Utterance(audioPath: audio, text: Transcript.normalize(String(parts[1]))))
                }
            }
        }
        if out.isEmpty {
            throw DatasetError(file: root, line: nil, message: "no <speaker>/<chapter>/<speaker>-<chapter>.trans.txt transcripts found")
        }
        return out
    }
}
