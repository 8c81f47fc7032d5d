// csptrain-fuzz: the network decoders under fuzzing.
//
//   csptrain-fuzz corpus DIR                       write the seed corpus (every message kind)
//   csptrain-fuzz run TARGET CORPUS [N] [SEED]     the seeded harness, N inputs (as the test runs it)
//   csptrain-fuzz replay TARGET PATH...            each file once (a libFuzzer corpus, a crash): outcomes
//
// Built with `-sanitize=fuzzer -D LIBFUZZER` (scripts/fuzz.sh), the same file is a libFuzzer
// target: CSPTRAIN_FUZZ_TARGET picks the decoder, and libFuzzer's mutations are mixed with the
// field-aware ones (LLVMFuzzerCustomMutator).
import Foundation
import Fuzzing

#if LIBFUZZER
/// libFuzzer calls in from one thread.
nonisolated(unsafe) let context = FuzzContext()
nonisolated(unsafe) let target = FuzzTarget(rawValue: ProcessInfo.processInfo.environment["CSPTRAIN_FUZZ_TARGET"] ?? "request") ?? .request
nonisolated(unsafe) var mutator = ProtoMutator(seed: 1)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    let outcome = context.run(target, bytes, foreignConnection: size % 4 == 3)
    if outcome.hasPrefix("BUG") { fatalError("\(target): \(outcome)") }
    return 0
}

@_cdecl("LLVMFuzzerCustomMutator")
public func fuzzMutate(_ data: UnsafeMutablePointer<UInt8>?, _ size: Int, _ maxSize: Int, _ seed: UInt32) -> Int {
    guard let data else { return 0 }
    if seed % 4 == 0 { return LLVMFuzzerMutate(data, size, maxSize) }
    mutator = ProtoMutator(seed: UInt64(seed))
    let out = mutator.mutate(Array(UnsafeBufferPointer(start: data, count: size)), maxBytes: maxSize)
    out.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: out.count) }
    return out.count
}

@_silgen_name("LLVMFuzzerMutate")
func LLVMFuzzerMutate(_ data: UnsafeMutablePointer<UInt8>, _ size: Int, _ maxSize: Int) -> Int

/// SwiftPM links an executable's entry point as `<module>_main` (`--defsym main=…`): that is
/// libFuzzer's driver here, so libFuzzer's own `main` is not linked in.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

@_cdecl("csptrain_fuzz_main")
public func fuzzDriverMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzOne(data, size) }
}
#else
@main
struct FuzzMain {
    static func main() throws {
        let args = CommandLine.arguments.dropFirst()
        switch args.first {
        case "corpus"?:
            guard let dir = args.dropFirst().first else { usage() }
            try FuzzCorpus.write(to: URL(fileURLWithPath: dir))
        case "run"?:
            let rest = Array(args.dropFirst())
            guard rest.count >= 2, let target = FuzzTarget(rawValue: rest[0]) else { usage() }
            let corpus = try FuzzCorpus.load(target, from: URL(fileURLWithPath: rest[1])).map(\.bytes)
            let n = rest.count > 2 ? Int(rest[2]) ?? 100_000 : 100_000
            let seed = rest.count > 3 ? UInt64(rest[3]) ?? 1 : 1
            print(FuzzHarness.run(target, corpus: corpus, iterations: n, seconds: .infinity, seed: seed).summary)
        case "replay"?:
            // Every file under the folders once (a libFuzzer corpus, a crash): the outcomes reached.
            let rest = Array(args.dropFirst())
            guard rest.count >= 2, let target = FuzzTarget(rawValue: rest[0]) else { usage() }
            let context = FuzzContext()
            var outcomes = FuzzOutcomes()
            var inputs = 0
            for path in rest.dropFirst() {
                var isFolder: ObjCBool = false
                FileManager.default.fileExists(atPath: path, isDirectory: &isFolder)
                let files = isFolder.boolValue ? try FileManager.default.contentsOfDirectory(atPath: path).sorted().map { path + "/" + $0 } : [path]
                for file in files {
                    let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
                    outcomes.record(bytes.withUnsafeBytes { context.run(target, $0, foreignConnection: bytes.count % 4 == 3) })
                    inputs += 1
                }
            }
            print("\(target.rawValue): \(inputs) inputs replayed")
            for (outcome, n) in outcomes.counts.sorted(by: { $0.key < $1.key }) { print("  \(n)\t\(outcome)") }
        default:
            usage()
        }
    }

    static func usage() -> Never {
        print("usage: csptrain-fuzz corpus DIR | csptrain-fuzz run {\(FuzzTarget.allCases.map(\.rawValue).joined(separator: ","))} CORPUS_DIR [INPUTS] [SEED] | csptrain-fuzz replay TARGET PATH...")
        exit(2)
    }
}
#endif
