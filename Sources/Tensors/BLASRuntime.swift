import CBLAS
import CKernels
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Makes OpenBLAS use the kernels this CPU can run.
///
/// OpenBLAS picks its kernels when the library loads, from the CPU model. On virtual machines
/// that report a generic model ("Intel Xeon Processor") Debian's OpenBLAS 0.3.21 falls back to
/// its Prescott (SSE3) kernels, several times slower than the AVX2/AVX-512 ones the CPU has.
/// The choice can only be overridden by OPENBLAS_CORETYPE before the library loads, so when the
/// fallback happened and the CPU flags allow better, this sets the variable and re-executes the
/// process (same arguments), before any work has started.
public enum BLASRuntime {
    /// The kernel family OpenBLAS chose ("Haswell", "SkylakeX", "Prescott", ...).
    public static var coreName: String { String(cString: openblas_get_corename()) }

    /// What a gradient's last bits depend on besides the inputs: OpenBLAS's kernel and the
    /// variant of csptrain's own matrix kernel. Processes with the same signature compute the
    /// same bits; deterministic runs require one signature for all workers.
    public static var computeSignature: String { "openblas \(coreName), kernels \(String(cString: csp_rows_kernel_name()))" }

    /// The core type this CPU supports, from /proc/cpuinfo flags.
    public static func bestCoreType() -> String? {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return nil }
        let flags = Set(line.split(separator: " ").map(String.init))
        if flags.isSuperset(of: ["avx512f", "avx512bw", "avx512vl", "avx512dq"]) { return "SkylakeX" }
        if flags.isSuperset(of: ["avx2", "fma"]) { return "Haswell" }
        return nil
    }

    /// Re-executes this process with OPENBLAS_CORETYPE set when OpenBLAS fell back to generic
    /// kernels; returns (doing nothing) otherwise. Call first thing in a command.
    public static func useBestKernels() {
        guard ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil,
              ["Prescott", "Core2", "Nehalem", "Sandybridge", "Unknown"].contains(coreName),
              let best = bestCoreType() else { return }
        setenv("OPENBLAS_CORETYPE", best, 1)
        let path = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var argv: [UnsafeMutablePointer<CChar>?] = CommandLine.arguments.map { strdup($0) }
        argv.append(nil)
        execv(path, argv)
        // execv returned: it failed; carry on with the generic kernels.
    }
}
