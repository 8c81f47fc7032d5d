import Foundation

extension InferenceBenchmark.Report {
    /// The table for a terminal (and BENCHMARKS.md).
    public var lines: [String] {
        var out: [String] = []
        out.append(String(format: "inference: PCM to text on one thread, %.1f M-parameter unidirectional model, %.0f s of audio; rtf = compute s / audio s",
                          Double(parameters) / 1e6, audioSeconds))
        out.append("  layout        sparsity  batch  mode       rtf      rtf dense  speedup  weight MB per audio s (sparse / dense)")
        for r in records {
            out.append("  " + r.layout.padding(toLength: 12, withPad: " ", startingAt: 0)
                       + String(format: "  %7.0f%%  %5d  %-9@  %.5f  %.5f    %6.2f   %7.2f / %.2f", 100 * r.sparsity, r.batch, r.mode as NSString,
                                r.rtf, r.rtfDense, r.speedup, r.weightBytesPerSecond / 1e6, r.denseWeightBytesPerSecond / 1e6))
        }
        out.append("  layouts chosen (batch 1, whole utterances):")
        for r in records where r.batch == 1 && r.mode == "utterance" && r.sparsity > 0 {
            out.append("    \(r.layout) \(Int((r.sparsity * 100).rounded()))%: " + r.layers.joined(separator: " "))
        }
        out.append("  time shares at batch 1 (whole utterances):")
        for (variant, seconds) in shares {
            let total = seconds.values.reduce(0, +)
            let parts = seconds.sorted { $0.value > $1.value }.map { String(format: "%@ %.0f%%", $0.key as NSString, 100 * $0.value / max(total, 1e-12)) }
            out.append("    \(variant): " + parts.joined(separator: ", "))
        }
        out.append("  streaming latency (100 ms chunks, compute only): partial p50/p95/p99, final after the end of the audio p50/p95, ms")
        for l in latency {
            out.append("    " + l.variant.padding(toLength: 16, withPad: " ", startingAt: 0)
                       + String(format: "  %6.3f %6.3f %6.3f   %6.3f %6.3f", 1e3 * l.partial[0], 1e3 * l.partial[1], 1e3 * l.partial[2],
                                1e3 * l.final[0], 1e3 * l.final[1]))
        }
        out.append("  exported file bytes: dense safetensors, compressed-tensors bitmask, csptrain compact (Rice); packed weights in memory")
        for f in files {
            out.append("    " + f.variant.padding(toLength: 16, withPad: " ", startingAt: 0)
                       + String(format: "  %9d  %9d  %9d (%.1fx smaller)  %9d", f.dense, f.bitmask, f.rice, Double(f.dense) / Double(max(1, f.rice)), f.packedBytes))
        }
        out.append(String(format: "  peak RSS of the benchmark process: %.1f MB", Double(peakRSSBytes) / 1e6))
        for d in disagreements { out.append("  note: \(d)") }
        return out
    }

    public var json: [String: Any] {
        [
            "records": records.map { r -> [String: Any] in
                ["layout": r.layout, "sparsity": r.sparsity, "batch": r.batch, "mode": r.mode, "rtf": r.rtf, "rtf_dense": r.rtfDense,
                 "speedup": r.speedup, "weight_bytes_per_audio_second": r.weightBytesPerSecond,
                 "dense_weight_bytes_per_audio_second": r.denseWeightBytesPerSecond, "layers": r.layers]
            },
            "time_shares": shares.map { ["variant": $0.variant, "seconds": $0.seconds] as [String: Any] },
            "latency": latency.map { ["variant": $0.variant, "partial_p50_p95_p99": $0.partial, "final_p50_p95": $0.final] as [String: Any] },
            "files": files.map { ["variant": $0.variant, "dense_safetensors": $0.dense, "bitmask_safetensors": $0.bitmask,
                                  "csptrain_compact": $0.rice, "packed_weight_bytes": $0.packedBytes] as [String: Any] },
            "peak_rss_bytes": peakRSSBytes, "parameters": parameters, "audio_seconds": audioSeconds,
            "disagreements": disagreements,
        ]
    }
}
