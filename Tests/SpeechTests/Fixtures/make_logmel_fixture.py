#!/usr/bin/env python3
"""Reference log-mel features for Tests/SpeechTests, computed with numpy in float64.

Run once and commit the output (logmel_fixture.json); the Swift extractor must reproduce it:

    python3 Tests/SpeechTests/Fixtures/make_logmel_fixture.py

Recipe (LogMelExtractor): periodic Hann window of 400 samples, hop 160, FFT size 512 (the
window zero-padded), power spectrum, 80 triangular filters spaced evenly on the HTK mel scale
between 0 and 8000 Hz evaluated at the bin frequencies (peak 1, unnormalised), natural log
floored at 1e-10, frames 1 + (N - 400) // 160 with no padding.
"""
import json
import pathlib

import numpy as np

rate, window_length, hop, n_fft, bands = 16000, 400, 160, 512, 80

rng = np.random.default_rng(20261121)
t = np.arange(2400) / rate
signal = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t) + 0.05 * rng.standard_normal(t.size)
signal = signal.astype(np.float32)  # the Swift side reads these exact float32 values

window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window_length) / window_length)


def hz_to_mel(f):
    return 2595 * np.log10(1 + f / 700)


def mel_to_hz(m):
    return 700 * (10 ** (m / 2595) - 1)


points = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(8000.0), bands + 2))
freqs = np.arange(n_fft // 2 + 1) * rate / n_fft
filters = np.zeros((bands, freqs.size))
for m in range(bands):
    left, centre, right = points[m], points[m + 1], points[m + 2]
    filters[m] = np.maximum(0, np.minimum((freqs - left) / (centre - left), (right - freqs) / (right - centre)))

frames = 1 + (signal.size - window_length) // hop
features = np.zeros((frames, bands))
for f in range(frames):
    chunk = signal[f * hop: f * hop + window_length].astype(np.float64) * window
    power = np.abs(np.fft.rfft(chunk, n_fft)) ** 2
    features[f] = np.log(np.maximum(filters @ power, 1e-10))

out = pathlib.Path(__file__).with_name("logmel_fixture.json")
out.write_text(json.dumps({
    "recipe": "see make_logmel_fixture.py",
    "signal": [float(x) for x in signal],
    "frames": int(frames),
    "bands": bands,
    "features": [float(x) for x in features.ravel()],
}))
print(f"wrote {out}: {frames} frames x {bands} bands")
