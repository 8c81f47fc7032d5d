#!/usr/bin/env python3
"""What kind of errors each model of scripts/speech-compare.sh makes on the test split.

    scripts/speech-compare-errors.py OUT [split]     split: test (default) or test_channel

For each scored model (OUT/<model>/<split>.json from `csptrain eval --json`): the sentences
transcribed exactly, the hypotheses two or more words longer or shorter than the reference, and
the share of hypothesis words that never occur in the training transcripts (a misspelt word is
one; a wrong but real word is not). Standard library only.
"""
import json
import pathlib
import sys


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = pathlib.Path(sys.argv[1])
    split = sys.argv[2] if len(sys.argv) > 2 else "test"
    corpus = out / "corpus"
    vocabulary = set()
    with open(corpus / "train.jsonl") as f:
        for line in f:
            vocabulary.update(json.loads(line)["text"].split())
    references = {}
    with open(corpus / f"{split}.jsonl") as f:
        for line in f:
            row = json.loads(line)
            references[pathlib.Path(row["audio_filepath"]).name] = row["text"]
    print(f"| model | exact sentences | ≥ 2 words longer | ≥ 2 words shorter | hypothesis words not in training's vocabulary |")
    print("| --- | --- | --- | --- | --- |")
    for model in ("ctc", "rnnt", "rnnt-aux"):
        path = out / model / f"{split}.json"
        if not path.exists():
            continue
        transcripts = json.loads(path.read_text())["transcripts"]
        pairs = [(references[pathlib.Path(t["audio"]).name], t["text"]) for t in transcripts]
        exact = sum(ref == hyp for ref, hyp in pairs)
        longer = sum(len(hyp.split()) - len(ref.split()) >= 2 for ref, hyp in pairs)
        shorter = sum(len(ref.split()) - len(hyp.split()) >= 2 for ref, hyp in pairs)
        words = [w for _, hyp in pairs for w in hyp.split()]
        unknown = sum(w not in vocabulary for w in words)
        print(f"| {model} | {exact} of {len(pairs)} | {longer} | {shorter} | {unknown} of {len(words)} ({100 * unknown / max(1, len(words)):.1f}%) |")


if __name__ == "__main__":
    main()
