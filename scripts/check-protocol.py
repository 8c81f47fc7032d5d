#!/usr/bin/env python3
"""A third party's check of csptrain's wire protocol, written from Proto/README.md and the .proto
files alone (standard library only: no protobuf package, no numpy).

  python3 scripts/check-protocol.py FIXTURE.json

FIXTURE is written by csptrain's ProtocolReferenceTests: weights frames (csptrain.v1.Weights) in
every encoding, gradient chunk requests (csptrain.v1.Request with a GradientChunk) in float32 and
bfloat16, and csptrain's own gradient of one micro-batch. This script decodes every frame and
chunk, rebuilds the synthetic data set from the counter-based generator, computes the MLP's
gradient for the micro-batch and compares. Exit status 0 when everything agrees.
"""
import json
import math
import struct
import sys

MASK64 = (1 << 64) - 1


# ---- protobuf wire format (https://protobuf.dev/programming-guides/encoding/) ----

def fields(buf):
    """Yields (field number, wire type, value) of a serialised message."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            length, i = varint(buf, i)
            value, i = buf[i:i + length], i + length
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire} at byte {i}")
        yield number, wire, value


def varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return result, i


# ---- values ----

def f32s(b):
    return list(struct.unpack(f"<{len(b) // 4}f", b))


def f16s(b):
    return list(struct.unpack(f"<{len(b) // 2}e", b))


def bf16s(b):
    """bfloat16: the upper 16 bits of a float32."""
    return [struct.unpack("<f", b"\0\0" + b[i:i + 2])[0] for i in range(0, len(b), 2)]


def to_f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def bf16_bits(x):
    """float32 → bfloat16 bits, rounded to nearest, ties to even (README, gradient chunks)."""
    bits = struct.unpack("<I", struct.pack("<f", x))[0]
    if (bits & 0x7F800000) == 0x7F800000 and bits & 0x7FFFFF:
        return (bits >> 16) | 0x40
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF


# ---- Encoding (README "Weights and their encodings") ----

class Bits:
    """Bits of a byte string, least significant bit of each byte first."""

    def __init__(self, data):
        self.data, self.pos = data, 0

    def bit(self):
        b = (self.data[self.pos >> 3] >> (self.pos & 7)) & 1
        self.pos += 1
        return b

    def read(self, k):
        """k bits; the first read is the value's least significant bit."""
        v = 0
        for j in range(k):
            v |= self.bit() << j
        return v


def rice_positions(code, count, nonzero):
    k = code[0]
    bits = Bits(code[1:])
    positions, position = [], -1
    for _ in range(nonzero):
        q = 0
        while bits.bit() == 1:  # the unary part repeats 1 bits and ends with a 0
            q += 1
        gap = (q << k) | bits.read(k)
        position += gap + 1
        assert position < count, "Rice code runs past the tensor"
        positions.append(position)
    assert all(bits.bit() == 0 for _ in range(len(code[1:]) * 8 - bits.pos)), "Rice code: trailing bits not zero"
    return positions


ENCODINGS = {1: "DENSE_F32", 2: "BITMASK_F32", 3: "RICE_F32", 4: "VALUES"}


def decode_weights(frame, layout, holding, seen):
    out = list(holding) if holding else [0.0] * sum(t["count"] for t in layout)
    version = 0
    for number, _, value in fields(frame):
        if number == 1:
            version = value
            continue
        assert number == 2
        part = {"tensor": 0, "encoding": 0, "values": b"", "mask": b"", "f16": False}
        for n, _, v in fields(value):
            part[{1: "tensor", 2: "encoding", 3: "values", 4: "mask", 5: "f16"}[n]] = v
        spec = layout[part["tensor"]]
        values = f16s(part["values"]) if part["f16"] else f32s(part["values"])
        encoding = ENCODINGS[part["encoding"]]
        seen.add(encoding)
        seen.add("float16" if part["f16"] else "float32")
        n, base = spec["count"], spec["offset"]
        if encoding == "DENSE_F32":
            positions = list(range(n))
        elif encoding == "BITMASK_F32":
            positions = [i for i in range(n) if part["mask"][i >> 3] >> (i & 7) & 1]
        elif encoding == "RICE_F32":
            positions = rice_positions(part["mask"], n, len(values))
        else:  # VALUES: the positions where the held previous version is non-zero
            assert holding, "VALUES needs the previous version"
            positions = [i for i in range(n) if holding[base + i] != 0]
        assert len(positions) == len(values), f"{spec['name']}: {len(positions)} positions, {len(values)} values"
        for i in range(n):
            out[base + i] = 0.0
        for p, v in zip(positions, values):
            out[base + p] = v
    return version, out


# ---- the synthetic data set (README "The built-in task") ----

def mix(x):
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def key(words):
    h = 0x243F6A8885A308D3
    for w in words:
        h = mix(h ^ mix((w + 0x9E3779B97F4A7C15) & MASK64))
    return h


class Stream:
    def __init__(self, *words):
        self.key, self.counter = key(words), 0

    def next(self):
        self.counter += 1
        return mix((self.key + self.counter * 0x9E3779B97F4A7C15) & MASK64)

    def gaussian(self):
        u1 = max((self.next() >> 11) * 2.0 ** -53, 1e-300)
        u2 = (self.next() >> 11) * 2.0 ** -53
        return to_f32(math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2))


def dataset(cfg):
    seed, D, C = cfg["seed"], cfg["input_dim"], cfg["classes"]
    noise = to_f32(cfg["noise"])
    s = Stream(seed, 1)
    centres = [s.gaussian() for _ in range(C * D)]

    def example(i):
        label = key([seed, 2, i]) % C
        s = Stream(seed, 3, i)
        x = [to_f32(centres[label * D + d] + to_f32(noise * s.gaussian())) for d in range(D)]
        return x, label
    return example


def mlp_gradient(cfg, w, indices, layout):
    """Mean over the micro-batch of the softmax cross-entropy gradient; and the loss sum."""
    D, H, C = cfg["input_dim"], cfg["hidden_dim"], cfg["classes"]
    o = {t["name"]: t["offset"] for t in layout}
    example = dataset(cfg)
    g = [0.0] * len(w)
    loss_sum, B = 0.0, len(indices)
    for i in indices:
        x, label = example(i)
        a1 = [math.tanh(sum(w[o["w1"] + h * D + d] * x[d] for d in range(D)) + w[o["b1"] + h]) for h in range(H)]
        z = [sum(w[o["w2"] + c * H + h] * a1[h] for h in range(H)) + w[o["b2"] + c] for c in range(C)]
        m = max(z)
        e = [math.exp(v - m) for v in z]
        p = [v / sum(e) for v in e]
        loss_sum -= math.log(p[label])
        dz = [(p[c] - (1 if c == label else 0)) / B for c in range(C)]
        for c in range(C):
            g[o["b2"] + c] += dz[c]
            for h in range(H):
                g[o["w2"] + c * H + h] += dz[c] * a1[h]
        for h in range(H):
            dz1 = sum(dz[c] * w[o["w2"] + c * H + h] for c in range(C)) * (1 - a1[h] ** 2)
            g[o["b1"] + h] += dz1
            for d in range(D):
                g[o["w1"] + h * D + d] += dz1 * x[d]
    return loss_sum, g


def main(path):
    fx = json.load(open(path))
    layout = [dict(t, count=math.prod(t["shape"])) for t in fx["tensors"]]
    total = sum(t["count"] for t in layout)
    seen = set()

    weights = {}
    for frame in fx["frames"]:
        holding = f32s(bytes.fromhex(frame["holding"])) if frame["holding"] else None
        version, out = decode_weights(bytes.fromhex(frame["weights"]), layout, holding, seen)
        expect = f32s(bytes.fromhex(frame["decoded"]))
        bad = [i for i in range(total) if to_f32(out[i]) != expect[i]]
        assert not bad, f"frame {frame['name']}: {len(bad)} values differ from csptrain's, first at {bad[0]}"
        weights[(frame["name"], version)] = out
        print(f"weights frame {frame['name']} (version {version}): {total} values as csptrain decodes them")

    # Gradient chunks: Request{header = 1, chunk = 13}.
    grads = {False: [None] * total, True: [None] * total}
    for ch in fx["chunks"]:
        req = {n: v for n, _, v in fields(bytes.fromhex(ch["request"]))}
        header = {n: v for n, _, v in fields(req[1])}
        c = {n: v for n, _, v in fields(req[13])}
        assert header[1] == 1 and header[2] == b"fixture-run" and header[3] == fx["task"]["step"]
        assert c.get(1, 0) == fx["task"]["micro_batch"] and c[8] == fx["task"]["weights_version"]
        bf16 = bool(c.get(10, 0))
        seen.add("bfloat16" if bf16 else "float32 chunks")
        values = bf16s(c[7]) if bf16 else f32s(c[7])
        t, index, count = layout[c.get(2, 0)], c.get(3, 0), c[4]
        cv = fx["chunk_values"]
        assert count == max(1, -(-t["count"] // cv)), f"{t['name']}: chunk_count {count}"
        start = t["offset"] + index * cv
        assert len(values) == min(t["count"], (index + 1) * cv) - index * cv
        grads[bf16][start:start + len(values)] = values
        loss_sum = struct.unpack("<d", c[6])[0]
    assert all(v is not None for v in grads[False]) and all(v is not None for v in grads[True]), "chunks missing"

    ours_csptrain = f32s(bytes.fromhex(fx["csptrain_gradient"]))
    assert grads[False] == ours_csptrain, "float32 chunks do not carry csptrain's gradient"
    for a, b in zip(grads[True], ours_csptrain):
        assert struct.unpack("<H", struct.pack("<f", a)[2:])[0] == bf16_bits(b), "bfloat16 chunk value is not the rounded float32"

    w = weights[("float32", fx["task"]["weights_version"])]
    loss, g = mlp_gradient(fx["config"], w, fx["task"]["example_indices"], layout)
    scale = max(abs(v) for v in g)
    worst = max(abs(a - b) for a, b in zip(g, ours_csptrain))
    print(f"gradient of micro-batch {fx['task']['micro_batch']} ({len(fx['task']['example_indices'])} examples): "
          f"max |ours - csptrain's| = {worst:.3g} (largest value {scale:.3g}); loss sum {loss:.6f} vs {loss_sum:.6f}")
    assert worst <= 1e-5 * scale + 1e-7, "the gradient differs from csptrain's"
    assert abs(loss - loss_sum) <= 1e-5 * abs(loss), "the loss sum differs from csptrain's"
    print("encodings decoded: " + ", ".join(sorted(seen)))
    print("check-protocol: all good")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
