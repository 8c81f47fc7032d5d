#!/usr/bin/env python3
"""Times onnxruntime on one thread running an exported csptrain model, for `csptrain bench
--only inference` (its peer row).

    python3 bench-onnx.py --model model.onnx --features feats.f32 --frames T --utterances U --repeats R

feats.f32 holds U utterances of T x F raw log-mel frames (float32 little-endian), one after the
other. Each utterance is one session run (batch 1). Prints one JSON line {"seconds": the best
total over the repeats, "onnxruntime": version}. Exit 2 when onnxruntime is missing.
"""
import argparse
import json
import sys
import time

import numpy as np


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--features", required=True)
    p.add_argument("--frames", type=int, required=True)
    p.add_argument("--utterances", type=int, required=True)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    try:
        import onnxruntime as ort
    except ImportError:
        print("bench-onnx: onnxruntime is not installed (scripts/python-env.sh installs it)", file=sys.stderr)
        return 2
    feats = np.fromfile(a.features, dtype="<f4").reshape(a.utterances, 1, a.frames, -1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(a.model, options, providers=["CPUExecutionProvider"])
    session.run(["logits"], {"features": feats[0]})
    best = float("inf")
    for _ in range(a.repeats):
        start = time.perf_counter()
        for u in range(a.utterances):
            session.run(["logits"], {"features": feats[u]})
        best = min(best, time.perf_counter() - start)
    print(json.dumps({"seconds": best, "onnxruntime": ort.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
