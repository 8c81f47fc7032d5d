#!/usr/bin/env python3
"""Checks an exported csptrain speech model against an independent numpy forward pass.

What it checks
  It takes a safetensors file written by
      csptrain checkpoint export CKPT --format safetensors --out FILE --layout dense|bitmask
  and checks every stored tensor's name, dtype and shape against the model description in
  the file's metadata (`csptrain.model`). With `--layout bitmask`, the prunable weights are
  stored in compressed-tensors' "sparse-bitmask" layout (csptrain profile, specified in
  docs/export-bitmask.md). The script checks that encoding strictly and rebuilds the dense
  weights from it. It then runs the model on one utterance:
      feature normalisation -> Conv1d+ReLU layers -> (bi)LSTM layers -> linear output
  and compares the resulting logits with the ones the Swift model wrote.
  The reference forward pass runs in float64, using the file's float32 weights and the
  float32 features.

How to run
  python3 scripts/check-export.py --model FILE.safetensors --features feats.f32 \
      --frames T --logits logits.f32 [--rtol 1e-4] [--atol 1e-4]
      feats.f32   T x F float32 little-endian, row-major (F = "features" in the metadata)
      logits.f32  T' x V float32 little-endian, the Swift model's logits (T' = frames after
                  the convolutions, V = "classes")
  python3 scripts/check-export.py --self-test
      Needs no Swift. Builds a small random model and writes it both dense and bitmask
      (~70% zeros) with this script's own writer. Checks that both files load to the same
      tensors and that the vectorised conv/LSTM match naive per-step versions, then runs
      the whole check, including failing cases.

Output: one JSON line
  {"ok", "max_abs_diff", "max_rel_diff", "frames", "classes", "layout", "tensors",
   "stored_tensors"}
  "tensors" counts the model's dense tensors after rebuilding; "stored_tensors" counts
  the entries in the file. ok = np.allclose(swift, reference, rtol, atol), i.e.
  |swift - ref| <= atol + rtol * |ref| everywhere. max_rel_diff is taken over the entries
  where ref != 0. A non-finite value is reported as null.
Exit status: 0 logits match, 1 they don't, 2 bad input (the message on stderr names the
  file or tensor at fault).

Bitmask layout, in short (full spec with upstream sources: docs/export-bitmask.md)
  Each compressed weight `name` with shape S is stored under prefix = name without a
  trailing ".weight" (conv.0.weight -> conv.0, output.weight -> output; LSTM names are kept
  whole). Rows are all leading dims flattened (R = prod(S[:-1])) and C = S[-1]:
    <prefix>.shape        I64 [ndim]          S
    <prefix>.bitmask      U8  [R, ceil(C/8)]  bit c%8 (LSB first) of byte [r, c//8] = W[r, c] != 0
    <prefix>.compressed   F32 [nnz]           the non-zeros in row-major order
    <prefix>.row_offsets  I64 [R]             exclusive prefix sum of the per-row counts
  Padding bits are 0. Biases and feature_normalization.* stay dense.

Dependencies: numpy, safetensors.
"""
import argparse
import json
import math
import os
import sys
import tempfile

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

COMPRESSION_PARAMS = ("shape", "compressed", "bitmask", "row_offsets")
INT_KEYS = ("features", "conv_channels", "conv_layers", "conv_kernel", "conv_stride",
            "conv_padding", "lstm_hidden", "lstm_layers", "classes")


class BadInput(Exception):
    """Input that cannot be checked (exit status 2)."""


# ---------------------------------------------------------------------------------------
# Model description and expected tensors


def model_config(meta, path):
    """(config dict, layout) from the safetensors __metadata__."""
    if not meta:
        raise BadInput(f"{path}: no __metadata__ (expected csptrain.layout and csptrain.model)")
    layout = meta.get("csptrain.layout")
    if layout not in ("dense", "bitmask"):
        raise BadInput(f"{path}: metadata csptrain.layout is {layout!r}, expected 'dense' or 'bitmask'")
    raw = meta.get("csptrain.model")
    if raw is None:
        raise BadInput(f"{path}: metadata has no csptrain.model")
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}: metadata csptrain.model is not JSON ({e})")
    if not isinstance(cfg, dict) or cfg.get("kind") != "ctc":
        raise BadInput(f"{path}: csptrain.model kind is {cfg.get('kind') if isinstance(cfg, dict) else cfg!r}, expected 'ctc'")
    for key in INT_KEYS:
        v = cfg.get(key)
        if not isinstance(v, int) or isinstance(v, bool):
            raise BadInput(f"{path}: csptrain.model field {key} is {v!r}, expected an integer")
        low = 0 if key in ("conv_padding", "conv_layers") else 1
        if v < low:
            raise BadInput(f"{path}: csptrain.model field {key} is {v}, must be >= {low}")
    if not isinstance(cfg.get("bidirectional"), bool):
        raise BadInput(f"{path}: csptrain.model field bidirectional is {cfg.get('bidirectional')!r}, expected true/false")
    return cfg, layout


def expected_tensors(cfg):
    """Ordered {name: (shape, prunable)} of the model's dense float32 tensors."""
    F, C, k = cfg["features"], cfg["conv_channels"], cfg["conv_kernel"]
    H, V = cfg["lstm_hidden"], cfg["classes"]
    dirs = 2 if cfg["bidirectional"] else 1
    out = {"feature_normalization.mean": ((F,), False),
           "feature_normalization.std": ((F,), False)}
    cin = F
    for n in range(cfg["conv_layers"]):
        out[f"conv.{n}.weight"] = ((C, cin, k), True)
        out[f"conv.{n}.bias"] = ((C,), False)
        cin = C
    for n in range(cfg["lstm_layers"]):
        for suffix in ("", "_reverse")[:dirs]:
            out[f"lstm.weight_ih_l{n}{suffix}"] = ((4 * H, cin), True)
            out[f"lstm.weight_hh_l{n}{suffix}"] = ((4 * H, H), True)
            out[f"lstm.bias_ih_l{n}{suffix}"] = ((4 * H,), False)
            out[f"lstm.bias_hh_l{n}{suffix}"] = ((4 * H,), False)
        cin = H * dirs
    out["output.weight"] = ((V, cin), True)
    out["output.bias"] = ((V,), False)
    return out


def output_frames(cfg, frames):
    for _ in range(cfg["conv_layers"]):
        frames = (frames + 2 * cfg["conv_padding"] - cfg["conv_kernel"]) // cfg["conv_stride"] + 1
    return frames


# ---------------------------------------------------------------------------------------
# Sparse-bitmask layout (compressed-tensors, csptrain profile; see docs/export-bitmask.md)


def bitmask_prefix(name):
    """compressed-tensors drops a trailing '.weight'; other names are kept whole."""
    return name[: -len(".weight")] if name.endswith(".weight") else name


def bitmask_encode(dense):
    """{param: array} for one dense float32 tensor (ndim >= 2): rows = all leading dims
    flattened (R = prod(S[:-1])), columns = last dim, bits packed little-endian per row."""
    S = dense.shape
    flat = np.ascontiguousarray(dense, dtype=np.float32).reshape(-1, S[-1])
    mask = flat != 0                                   # IEEE: -0.0 counts as zero
    counts = mask.sum(axis=1, dtype=np.int64)
    return {
        "shape": np.array(S, dtype=np.int64),
        "compressed": np.ascontiguousarray(flat[mask], dtype=np.float32),  # row-major
        "bitmask": np.packbits(mask, axis=-1, bitorder="little"),         # (R, ceil(C/8)) uint8
        "row_offsets": (np.cumsum(counts) - counts).astype(np.int64),     # (R,)
    }


def bitmask_decode(prefix, parts, expected_shape):
    """Dense float32 tensor from the four stored parts, validating them strictly."""
    shape_t = parts["shape"]
    if shape_t.dtype.kind not in "iu":
        raise BadInput(f"tensor {prefix}.shape has dtype {shape_t.dtype}, expected int64")
    S = tuple(int(v) for v in shape_t.reshape(-1))
    if S != tuple(expected_shape):
        raise BadInput(f"tensor {prefix}.shape is {list(S)}, the model needs {list(expected_shape)}")
    C = S[-1]
    R = math.prod(S[:-1])
    nb = (C + 7) // 8

    bm = parts["bitmask"]
    if bm.dtype != np.uint8:
        raise BadInput(f"tensor {prefix}.bitmask has dtype {bm.dtype}, expected uint8 (U8)")
    if bm.shape not in ((R, nb), S[:-1] + (nb,)):
        raise BadInput(f"tensor {prefix}.bitmask has shape {list(bm.shape)}, expected {[R, nb]}")
    bits = np.unpackbits(bm.reshape(R, nb), axis=-1, bitorder="little")
    if bits[:, C:].any():
        row = int(np.nonzero(bits[:, C:].any(axis=1))[0][0])
        raise BadInput(f"tensor {prefix}.bitmask: padding bits past column {C} are set (row {row}); "
                       "bit order must be little (column c -> byte c//8, bit c%8 = 1<<(c%8))")
    mask = bits[:, :C].astype(bool)
    counts = mask.sum(axis=1, dtype=np.int64)
    nnz = int(counts.sum())

    values = parts["compressed"]
    if values.dtype != np.float32:
        raise BadInput(f"tensor {prefix}.compressed has dtype {values.dtype}, expected float32 (F32)")
    if values.shape != (nnz,):
        raise BadInput(f"tensor {prefix}.compressed has shape {list(values.shape)}, "
                       f"the bitmask has {nnz} set bits")
    zeros = np.nonzero(values == 0)[0]
    if zeros.size:
        raise BadInput(f"tensor {prefix}.compressed stores a zero at index {int(zeros[0])}; "
                       "the bitmask must mark exactly the entries != 0")

    offsets = parts["row_offsets"]
    if offsets.dtype.kind not in "iu":
        raise BadInput(f"tensor {prefix}.row_offsets has dtype {offsets.dtype}, expected int64 (I64)")
    if offsets.shape == (R,):
        want = np.cumsum(counts) - counts
    elif len(S) > 2 and offsets.shape == S[:-1]:
        # What upstream's bitmask_compress writes for N-D input: cumsum over axis 0 only.
        rc = counts.reshape(S[:-1])
        want = np.cumsum(rc, axis=0) - rc
    else:
        raise BadInput(f"tensor {prefix}.row_offsets has shape {list(offsets.shape)}, expected {[R]}")
    bad = np.nonzero(offsets.astype(np.int64).reshape(-1) != want.reshape(-1))[0]
    if bad.size:
        i = int(bad[0])
        raise BadInput(f"tensor {prefix}.row_offsets[{i}] is {int(offsets.reshape(-1)[i])}, "
                       f"expected {int(want.reshape(-1)[i])} (exclusive prefix sum of row popcounts)")

    dense = np.zeros((R, C), dtype=np.float32)
    dense[mask] = values
    return dense.reshape(S)


# ---------------------------------------------------------------------------------------
# Loading and writing export files


def load_export(path):
    """(cfg, layout, {name: dense float32 array}, stored tensor count)."""
    if not os.path.isfile(path):
        raise BadInput(f"{path}: no such file")
    try:
        handle = safe_open(path, framework="numpy")
    except Exception as e:  # safetensors raises its own error types
        raise BadInput(f"{path}: not a readable safetensors file ({e})")
    with handle as f:
        cfg, layout = model_config(f.metadata(), path)
        keys = set(f.keys())
        params, used = {}, set()
        for name, (shape, prunable) in expected_tensors(cfg).items():
            prefix = bitmask_prefix(name)
            parts = {p: f"{prefix}.{p}" for p in COMPRESSION_PARAMS}
            present = sorted(k for k in parts.values() if k in keys)
            if name in keys and present:
                raise BadInput(f"{path}: {name} is stored both dense and compressed ({present[0]})")
            if name in keys:
                if layout == "bitmask" and prunable:
                    raise BadInput(f"{path}: layout is bitmask but {name} is stored dense "
                                   f"(expected {prefix}.compressed/.bitmask/.shape/.row_offsets)")
                arr = f.get_tensor(name)
                if arr.dtype != np.float32:
                    raise BadInput(f"{path}: tensor {name} has dtype {arr.dtype}, expected float32 (F32)")
                if arr.shape != shape:
                    raise BadInput(f"{path}: tensor {name} has shape {list(arr.shape)}, the model needs {list(shape)}")
                params[name] = arr
                used.add(name)
            elif present:
                if layout == "dense":
                    raise BadInput(f"{path}: layout is dense but {present[0]} is present")
                if not prunable:
                    raise BadInput(f"{path}: {name} must be stored dense, found {present[0]}")
                missing = [k for k in parts.values() if k not in keys]
                if missing:
                    raise BadInput(f"{path}: {name} is compressed but {', '.join(missing)} is missing")
                try:
                    params[name] = bitmask_decode(prefix, {p: f.get_tensor(k) for p, k in parts.items()}, shape)
                except BadInput as e:
                    raise BadInput(f"{path}: {e}")
                used.update(parts.values())
            else:
                where = f" (or {prefix}.compressed etc.)" if prunable else ""
                raise BadInput(f"{path}: tensor {name}{where} is missing")
        extra = sorted(keys - used)
        if extra:
            raise BadInput(f"{path}: unexpected tensors: {', '.join(extra[:8])}" + (" ..." if len(extra) > 8 else ""))
    for name, arr in params.items():
        if not np.isfinite(arr).all():
            raise BadInput(f"{path}: tensor {name} has non-finite values")
    if (params["feature_normalization.std"] <= 0).any():
        raise BadInput(f"{path}: tensor feature_normalization.std has entries <= 0")
    return cfg, layout, params, len(keys)


def write_export(path, cfg, params, layout, step=0):
    """Writes a file the way the Swift exporter must (used by --self-test)."""
    tensors = {}
    for name, (_, prunable) in expected_tensors(cfg).items():
        if layout == "bitmask" and prunable:
            prefix = bitmask_prefix(name)
            tensors.update({f"{prefix}.{p}": v for p, v in bitmask_encode(params[name]).items()})
        else:
            tensors[name] = np.ascontiguousarray(params[name], dtype=np.float32)
    metadata = {"format": "pt", "csptrain.layout": layout, "csptrain.step": str(step),
                "csptrain.model": json.dumps(cfg, separators=(",", ":"))}
    save_file(tensors, path, metadata=metadata)


# ---------------------------------------------------------------------------------------
# Reference forward pass (float64)


def sigmoid(a):
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def conv1d(x, W, b, stride, padding):
    """x (T, Cin), W (Cout, Cin, k): y[t, o] = b[o] + sum_c,j W[o, c, j] x[t*stride + j - padding, c]."""
    T, cin = x.shape
    k = W.shape[2]
    L = (T + 2 * padding - k) // stride + 1
    xp = np.zeros((T + 2 * padding, cin), dtype=x.dtype)
    xp[padding:padding + T] = x
    cols = xp[np.arange(L)[:, None] * stride + np.arange(k)[None, :]]   # (L, k, Cin)
    return np.einsum("ljc,ocj->lo", cols, W) + b


def lstm_direction(x, w_ih, w_hh, b_ih, b_hh, reverse):
    """One LSTM direction, zero initial state, gates (i, f, g, o). Returns (T, H)."""
    T = x.shape[0]
    H = w_hh.shape[1]
    pre = x @ w_ih.T + b_ih + b_hh
    h = np.zeros(H)
    c = np.zeros(H)
    out = np.zeros((T, H))
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        a = pre[t] + w_hh @ h
        i, f, o = sigmoid(a[:H]), sigmoid(a[H:2 * H]), sigmoid(a[3 * H:])
        g = np.tanh(a[2 * H:3 * H])
        c = f * c + i * g
        h = o * np.tanh(c)
        out[t] = h
    return out


def forward(cfg, params, feats):
    """Logits (T', V) in float64 for features (T, F)."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    x = (feats.astype(np.float64) - p["feature_normalization.mean"]) / p["feature_normalization.std"]
    for n in range(cfg["conv_layers"]):
        x = conv1d(x, p[f"conv.{n}.weight"], p[f"conv.{n}.bias"], cfg["conv_stride"], cfg["conv_padding"])
        x = np.maximum(x, 0.0)
    for n in range(cfg["lstm_layers"]):
        outs = []
        for suffix in ("", "_reverse")[: 2 if cfg["bidirectional"] else 1]:
            s = f"l{n}{suffix}"
            outs.append(lstm_direction(x, p[f"lstm.weight_ih_{s}"], p[f"lstm.weight_hh_{s}"],
                                       p[f"lstm.bias_ih_{s}"], p[f"lstm.bias_hh_{s}"], reverse=bool(suffix)))
        x = np.concatenate(outs, axis=1)
    return x @ p["output.weight"].T + p["output.bias"]


# ---------------------------------------------------------------------------------------
# The check


def read_f32(path, count, what):
    if not os.path.isfile(path):
        raise BadInput(f"{path}: no such file ({what})")
    size = os.path.getsize(path)
    if size != 4 * count:
        raise BadInput(f"{path}: {size} bytes, expected {4 * count} ({what})")
    return np.fromfile(path, dtype="<f4")


def json_number(v):
    return float(v) if np.isfinite(v) else None


def check(model, features, frames, logits, rtol, atol):
    """(result dict, exit status); raises BadInput."""
    cfg, layout, params, stored = load_export(model)
    F, V = cfg["features"], cfg["classes"]
    if frames < 1:
        raise BadInput(f"--frames is {frames}, must be >= 1")
    out_frames = output_frames(cfg, frames)
    if out_frames < 1:
        raise BadInput(f"--frames {frames} leaves no frames after {cfg['conv_layers']} convolutions")
    feats = read_f32(features, frames * F, f"{frames} x {F} float32 features").reshape(frames, F)
    if not np.isfinite(feats).all():
        raise BadInput(f"{features}: features contain non-finite values")
    got = read_f32(logits, out_frames * V, f"{out_frames} x {V} float32 logits").reshape(out_frames, V)

    ref = forward(cfg, params, feats)
    got64 = got.astype(np.float64)
    diff = np.abs(got64 - ref)
    nonzero = ref != 0
    max_abs = diff.max()
    max_rel = (diff[nonzero] / np.abs(ref[nonzero])).max() if nonzero.any() else 0.0
    ok = bool(np.isfinite(got).all() and np.allclose(got64, ref, rtol=rtol, atol=atol))
    result = {"ok": ok, "max_abs_diff": json_number(max_abs), "max_rel_diff": json_number(max_rel),
              "frames": out_frames, "classes": V, "layout": layout, "tensors": len(params),
              "stored_tensors": stored}
    return result, 0 if ok else 1


# ---------------------------------------------------------------------------------------
# Self-test


def naive_lstm(x, w_ih, w_hh, b_ih, b_hh, reverse):
    """Scalar per-step LSTM, written independently of lstm_direction."""
    T, I = x.shape
    H = w_hh.shape[1]
    h, c = [0.0] * H, [0.0] * H
    out = [[0.0] * H for _ in range(T)]
    steps = list(range(T))
    if reverse:
        steps.reverse()
    for t in steps:
        a = []
        for r in range(4 * H):
            s = float(b_ih[r]) + float(b_hh[r])
            s += sum(float(w_ih[r, j]) * float(x[t, j]) for j in range(I))
            s += sum(float(w_hh[r, j]) * h[j] for j in range(H))
            a.append(s)
        sig = lambda v: 1.0 / (1.0 + math.exp(-v))
        new_h = []
        for u in range(H):
            i, f = sig(a[u]), sig(a[H + u])
            g, o = math.tanh(a[2 * H + u]), sig(a[3 * H + u])
            c[u] = f * c[u] + i * g
            new_h.append(o * math.tanh(c[u]))
        h = new_h
        out[t] = list(h)
    return np.array(out)


def naive_conv(x, W, b, stride, padding):
    T, cin = x.shape
    cout, _, k = W.shape
    L = (T + 2 * padding - k) // stride + 1
    y = np.zeros((L, cout))
    for t in range(L):
        for o in range(cout):
            s = float(b[o])
            for ci in range(cin):
                for j in range(k):
                    src = t * stride + j - padding
                    if 0 <= src < T:
                        s += float(W[o, ci, j]) * float(x[src, ci])
            y[t, o] = s
    return y


def self_test():
    failures = []

    def expect(cond, what):
        print(("PASS " if cond else "FAIL ") + what)
        if not cond:
            failures.append(what)

    rng = np.random.default_rng(7)
    cfg = {"kind": "ctc", "features": 8, "conv_channels": 6, "conv_layers": 2, "conv_kernel": 3,
           "conv_stride": 2, "conv_padding": 1, "lstm_hidden": 5, "lstm_layers": 1,
           "bidirectional": True, "classes": 7}
    spec = expected_tensors(cfg)
    params = {}
    for name, (shape, prunable) in spec.items():
        a = rng.uniform(-0.8, 0.8, shape).astype(np.float32)
        if prunable:
            a[rng.random(shape) < 0.7] = 0
        params[name] = a
    params["feature_normalization.std"] = rng.uniform(0.5, 2.0, cfg["features"]).astype(np.float32)
    params["output.weight"][0] = 0                                   # an all-zero row
    params["output.weight"][1] = rng.uniform(0.1, 0.5, spec["output.weight"][0][1])  # a full row
    params["lstm.weight_hh_l0"][0, 0] = -0.0                         # -0.0 is dropped as zero
    prunable = [n for n, (_, p) in spec.items() if p]
    zeros = sum(int((params[n] == 0).sum()) for n in prunable) / sum(params[n].size for n in prunable)

    # Bit order and round trips of the encoder/decoder themselves.
    row = bitmask_encode(np.array([[1, 0, 0, 0, 0, 0, 0, 0, 0, 1]], dtype=np.float32))
    expect(row["bitmask"].tolist() == [[0x01, 0x02]], "bit order little: [1,0,0,0,0,0,0,0,0,1] -> bytes [0x01, 0x02]")
    for shape in [(3, 4, 3), (2, 9), (5, 17)]:
        for density in (0.0, 0.3, 1.0):
            d = (rng.uniform(0.1, 1, shape) * (rng.random(shape) < density)).astype(np.float32)
            back = bitmask_decode("t", bitmask_encode(d), shape)
            if not np.array_equal(back, d):
                expect(False, f"round trip {shape} density {density}")
    expect(not failures, "encode/decode round trips (3-D, odd widths, all-zero, all-set)")

    with tempfile.TemporaryDirectory() as tmp:
        dense_path = os.path.join(tmp, "dense.safetensors")
        bitmask_path = os.path.join(tmp, "bitmask.safetensors")
        write_export(dense_path, cfg, params, "dense", step=3)
        write_export(bitmask_path, cfg, params, "bitmask", step=3)
        _, _, dense_params, dense_stored = load_export(dense_path)
        _, _, sparse_params, sparse_stored = load_export(bitmask_path)
        same = all(np.array_equal(dense_params[n], sparse_params[n]) and np.array_equal(dense_params[n], params[n])
                   for n in spec)
        expect(same, f"dense ({dense_stored} stored) and bitmask ({sparse_stored} stored) files load to the "
                     f"same {len(spec)} tensors; prunable weights {zeros:.0%} zeros")

        with safe_open(bitmask_path, framework="numpy") as f:
            layout_ok = f.metadata().get("format") == "pt"
            for name in prunable:
                S = spec[name][0]
                p = bitmask_prefix(name)
                R, nb = math.prod(S[:-1]), (S[-1] + 7) // 8
                nnz = int((params[name] != 0).sum())
                want = {"shape": ("I64", [len(S)]), "bitmask": ("U8", [R, nb]),
                        "row_offsets": ("I64", [R]), "compressed": ("F32", [nnz])}
                for part, (dtype, shape) in want.items():
                    sl = f.get_slice(f"{p}.{part}")
                    layout_ok &= sl.get_dtype() == dtype and list(sl.get_shape()) == shape
        expect(layout_ok, "stored names/dtypes/shapes follow the spec (e.g. conv.0.bitmask U8 [48, 1], "
                          "lstm.weight_ih_l0.bitmask U8 [20, 1], output.bitmask U8 [7, 2])")

        # Vectorised layers against naive per-step/per-element versions.
        x = rng.normal(size=(9, 6))
        d = {k: v.astype(np.float64) for k, v in params.items()}
        worst = 0.0
        for s, rev in (("l0", False), ("l0_reverse", True)):
            args = (x, d[f"lstm.weight_ih_{s}"], d[f"lstm.weight_hh_{s}"], d[f"lstm.bias_ih_{s}"], d[f"lstm.bias_hh_{s}"])
            worst = max(worst, float(np.abs(lstm_direction(*args, reverse=rev) - naive_lstm(*args, reverse=rev)).max()))
        expect(worst < 1e-12, f"LSTM (both directions) matches the naive per-step version (max diff {worst:.1e})")
        xc = rng.normal(size=(11, 8))
        cdiff = float(np.abs(conv1d(xc, d["conv.0.weight"], d["conv.0.bias"], 2, 1)
                             - naive_conv(xc, d["conv.0.weight"], d["conv.0.bias"], 2, 1)).max())
        expect(cdiff < 1e-12, f"Conv1d matches the naive loop version (max diff {cdiff:.1e})")

        # The whole check, as the Swift side would run it.
        T = 23
        feats = rng.normal(size=(T, cfg["features"])).astype(np.float32)
        feats_path = os.path.join(tmp, "feats.f32")
        logits_path = os.path.join(tmp, "logits.f32")
        feats.astype("<f4").tofile(feats_path)
        logits = forward(cfg, params, feats).astype(np.float32)
        logits.astype("<f4").tofile(logits_path)
        for path in (dense_path, bitmask_path):
            result, code = check(path, feats_path, T, logits_path, 1e-4, 1e-4)
            print("     " + json.dumps(result))
            expect(code == 0 and result["frames"] == 6 and result["classes"] == 7,
                   f"check passes on the {result['layout']} file")
        wrong = logits.copy()
        wrong[2, 3] += 1e-2
        wrong_path = os.path.join(tmp, "wrong.f32")
        wrong.astype("<f4").tofile(wrong_path)
        result, code = check(bitmask_path, feats_path, T, wrong_path, 1e-4, 1e-4)
        expect(code == 1 and not result["ok"], f"perturbed logits fail (exit 1, max_abs_diff {result['max_abs_diff']:.2e})")

        def bad(label, fn):
            try:
                fn()
            except BadInput as e:
                expect(True, f"{label} -> exit 2: {e}")
                return
            expect(False, f"{label} -> exit 2")

        bad("wrong --frames", lambda: check(dense_path, feats_path, T - 1, logits_path, 1e-4, 1e-4))
        with safe_open(bitmask_path, framework="numpy") as f:
            raw = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata()
        for label, key, edit in [
            ("padding bit set", "conv.0.bitmask", lambda a: a.__setitem__((0, 0), a[0, 0] | 0x80)),
            ("row offsets off by one", "output.row_offsets", lambda a: a.__setitem__(3, a[3] + 1)),
        ]:
            broken = dict(raw)
            broken[key] = raw[key].copy()
            edit(broken[key])
            path = os.path.join(tmp, "broken.safetensors")
            save_file(broken, path, metadata=meta)
            bad(label, lambda: load_export(path))

    print("self-test " + ("passed" if not failures else f"FAILED ({len(failures)})"))
    return 0 if not failures else 1


# ---------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description="Compare a csptrain safetensors export's logits with a numpy reference.")
    parser.add_argument("--model", help="exported .safetensors file")
    parser.add_argument("--features", help="T x F float32 raw features")
    parser.add_argument("--frames", type=int, help="T, input frames")
    parser.add_argument("--logits", help="T' x V float32 raw logits from the Swift model")
    parser.add_argument("--rtol", type=float, default=1e-4)
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--self-test", action="store_true", help="run the built-in test (no Swift needed)")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    missing = [f"--{k}" for k in ("model", "features", "frames", "logits") if getattr(args, k) is None]
    if missing:
        parser.print_usage(sys.stderr)
        print(f"check-export: missing {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        result, code = check(args.model, args.features, args.frames, args.logits, args.rtol, args.atol)
    except BadInput as e:
        print(f"check-export: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return code


if __name__ == "__main__":
    sys.exit(main())
