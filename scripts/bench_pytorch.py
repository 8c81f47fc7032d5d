#!/usr/bin/env python3
"""The reference: csptrain's speech model in PyTorch on the CPU, trained on the same batches.

Same shape as `model.kind: ctc` with the default `model.acoustic` settings: two Conv1d(k=3,
stride 2, padding 1) + ReLU layers of 256 channels over 80 log-mel bands, a 2-layer bidirectional
LSTM of 256 units, a linear layer to 28 characters + blank, CTC loss, Adam 1e-3.

Features are random (throughput does not depend on their values); the batches' utterance lengths
come from --batches (one batch per line, its utterances' lengths in 10 ms frames: the batches
`csptrain bench speech` times itself on), so both sides compute on the same shapes. Prints one
JSON object.

Run it through scripts/bench-pytorch.sh, which keeps torch in its own virtual environment.
"""
import argparse
import json
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", required=True, help="one batch per line: its utterances' lengths in 10 ms frames")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--warmup", type=int, default=2, help="untimed training steps first (on the first batches)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    shapes = [[int(x) for x in line.split()] for line in open(args.batches) if line.strip()]
    if not shapes:
        raise SystemExit(f"{args.batches}: no batches")

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Sequential(nn.Conv1d(80, 256, 3, 2, 1), nn.ReLU(), nn.Conv1d(256, 256, 3, 2, 1), nn.ReLU())
            self.lstm = nn.LSTM(256, 256, num_layers=2, bidirectional=True)
            self.output = nn.Linear(512, 29)

        def forward(self, x, frames):  # x: (B, 80, T)
            y = self.conv(x).permute(2, 0, 1)  # (T', B, C)
            out_frames = frames
            for _ in range(2):
                out_frames = (out_frames + 2 - 3) // 2 + 1
            packed = nn.utils.rnn.pack_padded_sequence(y, out_frames, enforce_sorted=False)
            h, _ = self.lstm(packed)
            h, _ = nn.utils.rnn.pad_packed_sequence(h)
            return self.output(h).log_softmax(-1), out_frames

    model = Model()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ctc = nn.CTCLoss(blank=0, reduction="sum", zero_infinity=True)

    def batch(frames):
        t = max(frames)
        x = torch.randn(len(frames), 80, t)
        for b, f in enumerate(frames):
            x[b, :, f:] = 0
        label_lengths = [max(1, f // 10) for f in frames]  # about 10 characters per second
        labels = torch.randint(1, 29, (sum(label_lengths),))
        return x, torch.tensor(frames), labels, torch.tensor(label_lengths), sum(frames) / 100.0

    def step(b):
        x, frames, labels, label_lengths, _ = b
        logp, out_frames = model(x, frames)
        loss = ctc(logp, labels, out_frames, label_lengths) / x.shape[0]
        opt.zero_grad()
        loss.backward()
        opt.step()

    for frames in shapes[: args.warmup]:
        step(batch(frames))
    batches = [batch(frames) for frames in shapes]
    audio = sum(b[4] for b in batches)
    start = time.perf_counter()
    for b in batches:
        step(b)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "torch": torch.__version__, "threads": args.threads, "parameters": params, "batches": len(batches), "audio_seconds": audio, "seconds": seconds,
        "audio_seconds_per_second": audio / seconds,
    }))


if __name__ == "__main__":
    main()
