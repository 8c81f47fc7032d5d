import CSndfile
import CSoxr
import Foundation

/// Mono audio at some sample rate.
public struct Audio: Sendable, Equatable {
    public var samples: [Float]
    public var sampleRate: Int

    public init(samples: [Float], sampleRate: Int) {
        self.samples = samples
        self.sampleRate = sampleRate
    }

    public var seconds: Double { Double(samples.count) / Double(sampleRate) }
}

public struct AudioError: Error, CustomStringConvertible, Equatable {
    public let file: String
    public let message: String
    public var description: String { "\(file): \(message)" }
}

/// Reading and writing audio files with libsndfile (WAV, FLAC, and what else it knows).
public enum AudioFile {
    /// Reads a file and mixes its channels down to mono.
    public static func read(_ path: String) throws(AudioError) -> Audio {
        var info = SF_INFO()
        guard let file = sf_open(path, Int32(SFM_READ), &info) else {
            throw AudioError(file: path, message: "cannot read: " + String(cString: sf_strerror(nil)))
        }
        defer { sf_close(file) }
        guard info.channels > 0, info.samplerate > 0 else {
            throw AudioError(file: path, message: "no audio channels or no sample rate in the header")
        }
        let channels = Int(info.channels), frames = Int(info.frames)
        // A header claiming more than 4 hours is damaged (or not a recording we can train on).
        guard frames >= 0, frames <= 4 * 3600 * Int(info.samplerate), channels <= 64 else {
            throw AudioError(file: path, message: "implausible header: \(frames) frames of \(channels) channels at \(info.samplerate) Hz")
        }
        var interleaved = [Float](repeating: 0, count: frames * channels)
        let read = interleaved.withUnsafeMutableBufferPointer { sf_readf_float(file, $0.baseAddress, sf_count_t(frames)) }
        guard read == sf_count_t(frames) else {
            throw AudioError(file: path, message: "truncated: the header promises \(frames) frames, \(read) could be read")
        }
        var mono = [Float](repeating: 0, count: frames)
        if channels == 1 {
            mono = interleaved
        } else {
            let scale = 1 / Float(channels)
            for f in 0 ..< frames {
                var s: Float = 0
                for c in 0 ..< channels { s += interleaved[f * channels + c] }
                mono[f] = s * scale
            }
        }
        return Audio(samples: mono, sampleRate: Int(info.samplerate))
    }

    public enum Format: Sendable { case wav16, flac16 }

    /// Writes mono audio as 16-bit PCM WAV or FLAC (samples clipped to [−1, 1]).
    public static func write(_ audio: Audio, to path: String, format: Format = .wav16) throws(AudioError) {
        try write(interleaved: audio.samples, channels: 1, sampleRate: audio.sampleRate, to: path, format: format)
    }

    /// Writes interleaved multi-channel samples as 16-bit PCM WAV or FLAC.
    public static func write(interleaved samples: [Float], channels: Int, sampleRate: Int, to path: String,
                             format: Format = .wav16) throws(AudioError) {
        var info = SF_INFO()
        info.samplerate = Int32(sampleRate)
        info.channels = Int32(channels)
        info.format = Int32(format == .wav16 ? SF_FORMAT_WAV : SF_FORMAT_FLAC) | Int32(SF_FORMAT_PCM_16)
        guard let file = sf_open(path, Int32(SFM_WRITE), &info) else {
            throw AudioError(file: path, message: "cannot write: " + String(cString: sf_strerror(nil)))
        }
        defer { sf_close(file) }
        let clipped = samples.map { min(1, max(-1, $0)) }
        let frames = clipped.count / channels
        let written = clipped.withUnsafeBufferPointer { sf_writef_float(file, $0.baseAddress, sf_count_t(frames)) }
        guard written == sf_count_t(frames) else {
            throw AudioError(file: path, message: "write failed: " + String(cString: sf_strerror(file)))
        }
    }
}

/// Band-limited sample-rate conversion with libsoxr (its "high quality" setting: 20-bit
/// precision, pass band to 91% of the lower Nyquist frequency).
public enum Resampler {
    public static func resample(_ audio: Audio, to rate: Int) throws(AudioError) -> Audio {
        guard audio.sampleRate != rate else { return audio }
        guard !audio.samples.isEmpty else { return Audio(samples: [], sampleRate: rate) }
        let outCount = Int((Double(audio.samples.count) * Double(rate) / Double(audio.sampleRate)).rounded(.up)) + 16
        var out = [Float](repeating: 0, count: outCount)
        var done = 0
        var io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I)
        var quality = soxr_quality_spec(UInt(SOXR_HQ), 0)
        let error = audio.samples.withUnsafeBufferPointer { input in
            out.withUnsafeMutableBufferPointer { output in
                soxr_oneshot(Double(audio.sampleRate), Double(rate), 1, input.baseAddress, input.count, nil,
                             output.baseAddress, output.count, &done, &io, &quality, nil)
            }
        }
        if let error { throw AudioError(file: "(resampler)", message: String(cString: error)) }
        out.removeLast(out.count - done)
        return Audio(samples: out, sampleRate: rate)
    }
}

extension AudioFile {
    /// Reads any supported file as 16 kHz mono, the models' input.
    public static func read16k(_ path: String) throws(AudioError) -> Audio {
        let audio = try read(path)
        do { return try Resampler.resample(audio, to: 16_000) } catch {
            throw AudioError(file: path, message: "resampling from \(audio.sampleRate) Hz failed: \(error.message)")
        }
    }
}
