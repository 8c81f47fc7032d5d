import Foundation
import Testing
@testable import Speech

func tempFolder() throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("csptrain-ds-\(UInt64.random(in: 0 ... .max))").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func sine(_ hz: Double, rate: Int, seconds: Double) -> [Float] {
    (0 ..< Int(Double(rate) * seconds)).map { 0.4 * Float(sin(2 * Double.pi * hz * Double($0) / Double(rate))) }
}

struct ManifestTests {
    @Test func relativePathsResolveAgainstTheManifestFolder() throws {
        let dir = try tempFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try """
        {"audio_filepath": "audio/a.wav", "duration": 1.5, "text": "Turn ON the lights"}

        {"audio_filepath": "/abs/b.flac", "text": "volume up"}
        """.write(toFile: dir + "/train.jsonl", atomically: true, encoding: .utf8)
        let utterances = try Manifest.read(dir + "/train.jsonl")
        #expect(utterances.count == 2)
        #expect(utterances[0].audioPath == URL(fileURLWithPath: dir + "/audio/a.wav").standardizedFileURL.path)
        #expect(utterances[0].text == "turn on the lights" && utterances[0].duration == 1.5)
        #expect(utterances[1].audioPath == "/abs/b.flac")
        // Written back, paths are relative again.
        try Manifest.write(utterances, to: dir + "/copy.jsonl")
        #expect(try Manifest.read(dir + "/copy.jsonl") == utterances)
        #expect(try String(contentsOfFile: dir + "/copy.jsonl", encoding: .utf8).contains("\"audio/a.wav\""))
        // An audio path given relative to the working directory is stored relative to the manifest.
        try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: true)
        let cwd = FileManager.default.currentDirectoryPath
        let viaCwd = URL(fileURLWithPath: dir + "/sub/x.wav").path.replacingOccurrences(of: cwd + "/", with: "")
        try Manifest.write([Utterance(audioPath: viaCwd, text: "x")], to: dir + "/sub/m.jsonl")
        #expect(try Manifest.read(dir + "/sub/m.jsonl")[0].audioPath == dir + "/sub/x.wav")
    }

    @Test func badLinesAreNamed() throws {
        let dir = try tempFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "{\"audio_filepath\": \"a.wav\", \"text\": \"ok\"}\n{\"text\": \"no audio\"}\n"
            .write(toFile: dir + "/m.jsonl", atomically: true, encoding: .utf8)
        let error = #expect(throws: DatasetError.self) { try Manifest.read(dir + "/m.jsonl") }
        #expect(error?.line == 2)
        #expect(error?.description.contains("audio_filepath") == true)
    }
}

struct LibriSpeechTests {
    @Test func readsTheStandardLayout() throws {
        let root = try tempFolder()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let chapter = root + "/19/198"
        try FileManager.default.createDirectory(atPath: chapter, withIntermediateDirectories: true)
        for id in ["19-198-0000", "19-198-0001"] {
            try AudioFile.write(Audio(samples: sine(300, rate: 16_000, seconds: 0.1), sampleRate: 16_000), to: "\(chapter)/\(id).flac", format: .flac16)
        }
        try "19-198-0000 NORTHANGER ABBEY\n19-198-0001 THIS LITTLE WORK\n".write(toFile: "\(chapter)/19-198.trans.txt", atomically: true, encoding: .utf8)
        let utterances = try LibriSpeech.read(root)
        #expect(utterances.map(\.text) == ["northanger abbey", "this little work"])
        #expect(utterances[1].audioPath == "\(chapter)/19-198-0001.flac")
        #expect(try AudioFile.read16k(utterances[0].audioPath).samples.count == 1600)
    }

    @Test func anEmptyFolderIsAnError() throws {
        let root = try tempFolder()
        defer { try? FileManager.default.removeItem(atPath: root) }
        #expect(throws: DatasetError.self) { try LibriSpeech.read(root) }
    }
}

struct ShardTests {
    @Test func roundTripAndCorruptionDetection() throws {
        let dir = try tempFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/s.bin"
        let writer = ShardWriter(path: path)
        let clips = [sine(200, rate: 16_000, seconds: 0.05), [], sine(900, rate: 16_000, seconds: 0.02)]
        for (i, c) in clips.enumerated() { writer.add(samples: c, text: "clip \(i)") }
        try writer.finish()
        let reader = try ShardReader(path: path)
        #expect(reader.count == 3)
        for (i, c) in clips.enumerated() {
            let e = try reader.example(i)
            #expect(e.text == "clip \(i)")
            #expect(e.samples.count == c.count)
            #expect(zip(e.samples, c).allSatisfy { abs($0 - $1) <= 1.0 / 32767 })
        }
        // Flip a byte inside the first record's audio.
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[40] ^= 0x55
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let damaged = try ShardReader(path: path)
        let error = #expect(throws: ShardError.self) { try damaged.example(0) }
        #expect(error?.description.contains("example 0") == true && error?.description.contains(path) == true)
        #expect(try damaged.example(2).text == "clip 2")
        // Truncated.
        try Data(bytes.prefix(bytes.count - 5)).write(to: URL(fileURLWithPath: path))
        #expect(throws: ShardError.self) { try ShardReader(path: path) }
    }

    @Test func preparationSkipsBadInputWithReasonsAndIndexesAcrossShards() throws {
        let dir = try tempFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var utterances: [Utterance] = []
        for i in 0 ..< 5 {
            let path = dir + "/u\(i).wav"
            try AudioFile.write(Audio(samples: sine(200 + 100 * Double(i), rate: 22_050, seconds: 0.3), sampleRate: 22_050), to: path)
            utterances.append(Utterance(audioPath: path, text: "utterance \(i)"))
        }
        try Data("garbage".utf8).write(to: URL(fileURLWithPath: dir + "/bad.wav"))
        utterances.append(Utterance(audioPath: dir + "/bad.wav", text: "bad"))
        utterances.append(Utterance(audioPath: dir + "/u0.wav", text: ""))
        let report = try Preparation.prepare(utterances, into: dir + "/shards", shardSize: 2)
        #expect(report.prepared == 5)
        #expect(report.skipped.count == 2)
        #expect(report.skipped.contains { $0.file.hasSuffix("bad.wav") })
        #expect(report.skipped.contains { $0.reason == "empty transcript" })
        let set = try ShardSet(folder: dir + "/shards")
        #expect(set.count == 5 && set.index.shards.count == 3)
        #expect(try set.example(4).text == "utterance 4")
        #expect(try set.example(3).samples.count == 4800)  // 0.3 s at 16 kHz
        #expect(set.index.featureMean.count == 80 && set.index.featureStd.allSatisfy { $0 > 0 })
        #expect(set.index.skipped.count == 2)
    }
}
