#!/usr/bin/env python3
"""Runs an ONNX model exported by csptrain in onnxruntime and compares its logits with the
Swift model's on the same utterance.

    csptrain checkpoint export RUN --format onnx --out model.onnx --reference utterance.wav
    python3 scripts/check-onnx.py --model model.onnx --reference model.onnx.reference.json

The reference JSON (written by --reference) names the raw log-mel features (frames x features,
float32 little-endian) and the Swift model's logits (output_frames x classes). onnxruntime runs
on one thread on the CPU. Output: one JSON line {"ok", "max_abs_diff", "frames", "classes",
"seconds"}. Exit status 0 when |onnx - swift| <= atol + rtol * |swift| everywhere, 1 when not,
2 on bad input (the message names the file).

Dependencies: numpy, onnxruntime (scripts/python-env.sh installs both).
"""
import argparse
import json
import sys
import time

import numpy as np


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--reference", required=True)
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument("--atol", type=float, default=1e-3)
    args = p.parse_args()
    try:
        import onnxruntime as ort
    except ImportError:
        print("check-onnx: onnxruntime is not installed (scripts/python-env.sh installs it)", file=sys.stderr)
        return 2
    try:
        with open(args.reference) as f:
            ref = json.load(f)
        feats = np.fromfile(ref["features_file"], dtype="<f4").reshape(ref["frames"], ref["features"])
        logits = np.fromfile(ref["logits_file"], dtype="<f4").reshape(ref["output_frames"], ref["classes"])
    except (OSError, KeyError, ValueError) as e:
        print(f"check-onnx: {args.reference}: {e}", file=sys.stderr)
        return 2
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for a bad graph
        print(f"check-onnx: {args.model}: onnxruntime cannot load it: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    (out,) = session.run(["logits"], {"features": feats[None, :, :].astype(np.float32)})
    seconds = time.perf_counter() - start
    out = out[0]
    if out.shape != logits.shape:
        print(json.dumps({"ok": False, "error": f"shape {list(out.shape)} against the Swift model's {list(logits.shape)}"}))
        return 1
    diff = float(np.max(np.abs(out - logits))) if out.size else 0.0
    ok = bool(np.allclose(out, logits, rtol=args.rtol, atol=args.atol))
    print(json.dumps({"ok": ok, "max_abs_diff": diff, "frames": int(out.shape[0]), "classes": int(out.shape[1]), "seconds": seconds}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
