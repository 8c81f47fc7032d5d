import Foundation

/// The command-line synthesizers and sox that `data synth` runs as child processes. Every failure
/// names the tool, the Debian package that provides it and, for a voice, the voices there are.
public struct VoiceTools: Sendable {
    public var espeak = "espeak-ng"
    public var flite = "flite"
    public var sox = "sox"

    public init() {}

    // MARK: espeak-ng

    /// English voices of espeak-ng's own (not mbrola, which needs extra data).
    public func englishVoices() throws -> [String] {
        let listing = try run([espeak, "--voices=en"], package: "espeak-ng")
        var voices: [String] = []
        for line in listing.split(separator: "\n").dropFirst() {
            let cols = line.split(separator: " ", omittingEmptySubsequences: true)
            guard cols.count >= 5, cols[4].hasPrefix("gmw/") else { continue }
            voices.append(String(cols[1]))
        }
        return Array(Set(voices)).sorted()
    }

    /// Variant names from espeak-ng's data folder (`voices/!v`).
    public func variantNames() throws -> [String] {
        let dataPath = try run([espeak, "--version"], package: "espeak-ng").components(separatedBy: "Data at: ").last?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "/usr/lib/x86_64-linux-gnu/espeak-ng-data"
        let folder = dataPath + "/voices/!v"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        return names.filter { !$0.contains(" ") }.sorted()
    }

    /// espeak-ng writes 22.05 kHz WAV. `voice` may carry a variant (`en-us+f3`).
    public func espeak(_ text: String, voice: String, speed: Int, pitch: Int, to path: String) throws {
        _ = try run([espeak, "-v", voice, "-s", String(speed), "-p", String(pitch), "-w", path, text], package: "espeak-ng")
        // espeak-ng exits 0 even when it cannot create the file.
        guard FileManager.default.fileExists(atPath: path) else {
            throw DatasetError(file: path, line: nil, message: "espeak-ng wrote no audio (is the folder writable?)")
        }
    }

    // MARK: flite

    /// The voices compiled into flite (`flite -lv`). Debian's flite links them in (kal, kal16,
    /// awb, rms, slt and the talking clock awb_time); there are no voice files to find.
    public func fliteVoices() throws -> [String] {
        let listing = try run([flite, "-lv"], package: "flite")
        guard let line = listing.split(separator: "\n").first(where: { $0.hasPrefix("Voices available:") }) else {
            throw DatasetError(file: flite, line: nil, message: "`flite -lv` printed no 'Voices available:' line: \(listing.prefix(200))")
        }
        return line.dropFirst("Voices available:".count).split(separator: " ").map(String.init)
    }

    /// flite speaks an unknown voice name as kal without a word, so names are checked first.
    public func requireFliteVoices(_ needed: [String]) throws {
        let available = Set(try fliteVoices())
        let missing = needed.filter { !available.contains($0) }
        guard missing.isEmpty else {
            throw DatasetError(file: flite, line: nil, message: """
                flite has no voice \(missing.joined(separator: ", ")) (it has \(available.sorted().joined(separator: ", "))): \
                Debian's flite package (apt-get install flite) has kal16, awb, rms and slt built in; another build of flite may lack them, or use --engines espeak-ng
                """)
        }
    }

    /// flite writes 16 kHz WAV (8 kHz for kal). `stretch` is duration_stretch (larger is slower),
    /// `f0` the target mean pitch in Hz; both as the text flite is given, so they are recorded exactly.
    public func flite(_ text: String, voice: String, stretch: String, f0: String, to path: String) throws {
        _ = try run([flite, "-voice", voice, "--setf", "duration_stretch=\(stretch)", "--setf", "int_f0_target_mean=\(f0)",
                     "-t", text, "-o", path], package: "flite")
        guard FileManager.default.fileExists(atPath: path) else {
            throw DatasetError(file: path, line: nil, message: "flite wrote no audio (is the folder writable?)")
        }
    }

    // MARK: sox

    /// Fails with the install hint when sox is missing.
    public func requireSox() throws { _ = try run([sox, "--version"], package: "sox") }

    /// Tempo (WSOLA, speech mode) and pitch perturbation. `-R` seeds sox's generators and `-D`
    /// turns dithering off, so the same input gives the same bytes; `-G` attenuates where the
    /// pitch shift would clip.
    public func perturb(_ input: String, to output: String, tempo: String?, cents: String?) throws {
        var effects: [String] = []
        if let tempo { effects += ["tempo", "-s", tempo] }
        if let cents { effects += ["pitch", cents] }
        _ = try run([sox, "-R", "-D", "-G", input, output] + effects, package: "sox")
    }

    // MARK: processes

    /// Runs a tool found on the PATH and returns its standard output; a missing tool, a non-zero
    /// exit and unreadable output are errors naming the command.
    func run(_ arguments: [String], package: String) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let pipe = Pipe(), errors = Pipe()
        process.standardOutput = pipe
        process.standardError = errors
        let hint = "is \(arguments[0]) installed? (Debian: apt-get install \(package), or scripts/install-deps.sh)"
        do { try process.run() } catch {
            throw DatasetError(file: arguments[0], line: nil, message: "cannot run \(arguments[0]): \(hint)")
        }
        // Drain stderr concurrently, so a chatty child cannot block on a full pipe.
        let errBox = ResultBox()
        let drain = Thread {
            do { errBox.add(String(decoding: try errors.fileHandleForReading.readToEnd() ?? Data(), as: UTF8.self)) } catch {
                errBox.add("(cannot read its standard error: \(error))")
            }
        }
        drain.start()
        let out: Data
        do { out = try pipe.fileHandleForReading.readToEnd() ?? Data() } catch {
            process.waitUntilExit()
            throw DatasetError(file: arguments[0], line: nil, message: "cannot read the output of \(arguments.joined(separator: " ")): \(error)")
        }
        process.waitUntilExit()
        while errBox.first == nil { usleep(1000) }
        let err = errBox.first ?? ""
        // env exits 127 when it cannot find the program.
        if process.terminationStatus == 127 {
            throw DatasetError(file: arguments[0], line: nil, message: "cannot run \(arguments[0]): \(hint)")
        }
        guard process.terminationStatus == 0 else {
            throw DatasetError(file: arguments[0], line: nil, message: "\(arguments.joined(separator: " ")) failed (exit \(process.terminationStatus)): \(err)")
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Collects failures from concurrent lanes.
final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var messages: [String] = []
    func add(_ m: String) { lock.lock(); messages.append(m); lock.unlock() }
    var first: String? { lock.lock(); defer { lock.unlock() }; return messages.first }
}
