#!/usr/bin/env python3
"""Makes Tests/ModelsTests/Fixtures/rnnt_torchaudio.json: torchaudio's RNN-T loss and gradient on
random inputs, for the Swift loss to match without torch at test time. Run once, commit the output:

    python3 -m venv /tmp/venv-torch && /tmp/venv-torch/bin/pip install torch==2.11.0 torchaudio==2.11.0
    /tmp/venv-torch/bin/python scripts/make-rnnt-fixture.py

PyPI's torchaudio wheels link torch's CUDA libraries (libtorch_cuda, libcudart), so they load with
PyPI's default (CUDA) torch, which runs this on the CPU; a CPU-only torch wheel refuses them.

Each batch: logits (B, maxT, maxU + 1, V) ~ N(0, scale²) in float32, per-utterance frame counts
and labels in 1..<V, and torchaudio.functional.rnnt_loss(blank=0, reduction="sum",
fused_log_softmax=True)'s loss and gradient with respect to the logits (zero in the padding).
"""
import json
import pathlib

import torch
import torchaudio
import torchaudio.functional as F

OUT = pathlib.Path(__file__).resolve().parent.parent / "Tests/ModelsTests/Fixtures/rnnt_torchaudio.json"


def batch(generator, frames, label_counts, classes, scale):
    B, T, N = len(frames), max(frames), max(label_counts) + 1
    logits = (scale * torch.randn(B, T, N, classes, generator=generator)).requires_grad_()
    targets = torch.zeros(B, N - 1, dtype=torch.int32)
    labels = []
    for b, count in enumerate(label_counts):
        y = torch.randint(1, classes, (count,), generator=generator, dtype=torch.int32)
        targets[b, :count] = y
        labels.append(y.tolist())
    loss = F.rnnt_loss(logits, targets, torch.tensor(frames, dtype=torch.int32),
                       torch.tensor(label_counts, dtype=torch.int32), blank=0, reduction="sum",
                       fused_log_softmax=True)
    loss.backward()
    return {
        "shape": [B, T, N, classes],
        "frames": frames,
        "labels": labels,
        "logits": [float(v) for v in logits.detach().reshape(-1)],
        "loss": float(loss.detach()),
        "gradient": [float(v) for v in logits.grad.reshape(-1)],
    }


def main():
    generator = torch.Generator().manual_seed(20261129)
    batches = [
        batch(generator, [4, 3], [2, 3], 5, 1.0),          # a label count past its frame count: a transducer allows it
        batch(generator, [7, 5, 6], [3, 0, 4], 6, 2.0),    # an empty transcript; larger logits
        batch(generator, [1, 2], [1, 2], 3, 0.5),          # a single frame
    ]
    fixture = {
        "made_by": "scripts/make-rnnt-fixture.py",
        "torch": torch.__version__,
        "torchaudio": torchaudio.__version__,
        "call": "torchaudio.functional.rnnt_loss(logits, targets, logit_lengths, target_lengths, blank=0, reduction='sum', fused_log_softmax=True)",
        "batches": batches,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixture) + "\n")
    print(f"wrote {OUT.name}: {len(batches)} batches, torch {torch.__version__}, torchaudio {torchaudio.__version__}")


if __name__ == "__main__":
    main()
