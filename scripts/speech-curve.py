#!/usr/bin/env python3
"""Validation WER against wall time for a speech run.

    scripts/speech-curve.py RUN_DIR [--from-checkpoints [--limit N] [--csptrain PATH]] [--out FILE.svg]

By default it takes the validation error rates the workers measured during the run from
RUN_DIR/metrics.jsonl (lines with valid_wer, at their wall_seconds). With --from-checkpoints it
instead runs `csptrain eval --json` on every RUN_DIR/checkpoints/step-*.ckpt against the run's
validation manifests (the first N utterances of each, default all). Writes RUN_DIR/curve.csv and an
SVG plot (no plotting library needed).
"""
import argparse
import json
import pathlib
import re
import subprocess
import tempfile


def evaluate(csptrain, checkpoint, manifest, limit):
    lines = pathlib.Path(manifest).read_text().splitlines()
    if limit:
        lines = lines[:limit]
    folder = pathlib.Path(manifest).parent
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", dir=folder, delete=False) as f:
        f.write("\n".join(lines) + "\n")
        subset = f.name
    try:
        out = subprocess.run([csptrain, "eval", "--checkpoint", str(checkpoint), "--manifest", subset, "--json"],
                             check=True, capture_output=True, text=True).stdout
    finally:
        pathlib.Path(subset).unlink()
    return json.loads(out)


def svg(points, out):
    width, height, pad = 640, 400, 50
    max_t = max(p[0] for p in points) or 1
    max_w = max(max(p[1], p[2]) for p in points) or 1
    max_w = min(1.0, max_w * 1.1)

    def xy(t, w):
        return pad + (width - 2 * pad) * t / max_t, height - pad - (height - 2 * pad) * min(w, max_w) / max_w

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="black"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="black"/>',
             f'<text x="{width / 2}" y="{height - 12}" text-anchor="middle">wall time (minutes)</text>',
             f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" text-anchor="middle">validation WER</text>']
    for i in range(6):
        w = max_w * i / 5
        _, y = xy(0, w)
        parts.append(f'<text x="{pad - 6}" y="{y + 4}" text-anchor="end">{100 * w:.0f}%</text>')
        parts.append(f'<line x1="{pad}" y1="{y}" x2="{width - pad}" y2="{y}" stroke="#ddd"/>')
    for i in range(6):
        t = max_t * i / 5
        x, _ = xy(t, 0)
        parts.append(f'<text x="{x}" y="{height - pad + 16}" text-anchor="middle">{t / 60:.0f}</text>')
    # The goals: 8% clean and 15% channel-degraded within 30 minutes.
    for goal, colour in [(0.08, "#1f77b4"), (0.15, "#d62728")]:
        if goal <= max_w:
            _, y = xy(0, goal)
            parts.append(f'<line x1="{pad}" y1="{y:.1f}" x2="{width - pad}" y2="{y:.1f}" stroke="{colour}" stroke-dasharray="4 4"/>')
            parts.append(f'<text x="{width - pad - 4}" y="{y - 4:.1f}" text-anchor="end" fill="{colour}">goal {100 * goal:.0f}%</text>')
    if 1800 <= max_t:
        x, _ = xy(1800, 0)
        parts.append(f'<line x1="{x:.1f}" y1="{pad}" x2="{x:.1f}" y2="{height - pad}" stroke="#555" stroke-dasharray="4 4"/>')
        parts.append(f'<text x="{x - 4:.1f}" y="{pad + 12}" text-anchor="end" fill="#555">30 min</text>')
    for column, colour, label in [(1, "#1f77b4", "clean"), (2, "#d62728", "channel-degraded")]:
        path = " ".join(f"{'M' if i == 0 else 'L'}{xy(p[0], p[column])[0]:.1f},{xy(p[0], p[column])[1]:.1f}" for i, p in enumerate(points))
        parts.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for p in points:
            x, y = xy(p[0], p[column])
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
        ly = pad + (20 if column == 1 else 38)
        parts.append(f'<line x1="{width - pad - 150}" y1="{ly}" x2="{width - pad - 130}" y2="{ly}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{width - pad - 125}" y="{ly + 4}">{label}</text>')
    parts.append("</svg>")
    pathlib.Path(out).write_text("\n".join(parts))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--from-checkpoints", action="store_true")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--csptrain", default=".build/release/csptrain")
    ap.add_argument("--out")
    args = ap.parse_args()
    run = pathlib.Path(args.run_dir)
    if not args.from_checkpoints:
        points = []
        for line in (run / "metrics.jsonl").read_text().splitlines():
            m = json.loads(line)
            if "valid_wer" in m and "wall_seconds" in m:
                points.append((m["wall_seconds"], m["valid_wer"], m["valid_wer_channel"], m["step"], m["valid_cer"], m["valid_cer_channel"]))
        if not points:
            raise SystemExit(f"{run}/metrics.jsonl has no validation lines with wall_seconds: use --from-checkpoints")
        write(run, points, args.out)
        return
    config = (run / "config.yaml").read_text()
    valid = re.search(r'^\s*valid:\s*"?([^"\n]+)"?', config, re.M).group(1)
    channel = re.search(r'^\s*valid_channel:\s*"?([^"\n]+)"?', config, re.M).group(1)
    # Shard folders live in <corpus>/shards/<split>; the manifests in <corpus>/<split>.jsonl.
    corpus = pathlib.Path(valid).parent.parent
    manifests = {"clean": corpus / "valid.jsonl", "channel": corpus / "valid_channel.jsonl"}
    assert pathlib.Path(channel).parent.parent == corpus
    wall = {}
    elapsed = 0.0
    for line in (run / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        elapsed += m["step_seconds"]
        wall[m["step"]] = elapsed
    points = []
    for ckpt in sorted(run.glob("checkpoints/step-*.ckpt"), key=lambda p: int(p.stem.split("-")[1])):
        step = int(ckpt.stem.split("-")[1])
        clean = evaluate(args.csptrain, ckpt, manifests["clean"], args.limit)
        degraded = evaluate(args.csptrain, ckpt, manifests["channel"], args.limit)
        points.append((wall.get(step, 0.0), clean["wer"], degraded["wer"], step, clean["cer"], degraded["cer"]))
        print(f"step {step}: {wall.get(step, 0) / 60:.1f} min, WER clean {100 * clean['wer']:.2f}%, channel {100 * degraded['wer']:.2f}%", flush=True)
    write(run, points, args.out)


def write(run, points, out):
    with open(run / "curve.csv", "w") as f:
        f.write("step,wall_seconds,wer,wer_channel,cer,cer_channel\n")
        for t, w, wc, s, c, cc in points:
            f.write(f"{s},{t:.1f},{w:.4f},{wc:.4f},{c:.4f},{cc:.4f}\n")
    svg(points, out or run / "curve.svg")


if __name__ == "__main__":
    main()
