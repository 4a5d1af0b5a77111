#!/usr/bin/env python3
"""The demo's sample images: scenes drawn like the held-out ones, from seeds no training or evaluation uses.

    python3 train/samples.py candidates --out DIR [--n 24] [--kinds sign,shapes,mixed]
                                                                candidate scenes of each kind, their truth and
                                                                requests for `varco run --batch` (to pick from)
    python3 train/samples.py write --out DIR --truth FILE KIND=SEED ...   the chosen ones: DIR/KIND.png, and
                                                                every item's text and box in FILE (JSON)

Kinds: `sign` (single Korean words, for OCR), `shapes` (coloured shapes, for grounding), `mixed` (shapes and
words in Latin and Hangul, for grounding). The truth comes from the scene generator, never from a model: the
browser test compares the demo's boxes with it.
"""
import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import scenes  # noqa: E402

SAMPLE_SALT = 5_555_555_555_555
KINDS = ("sign", "shapes", "mixed")


def spec(kind):
    """Clean, mid-sized scenes: what the demo shows first should be what the model does well."""
    s = scenes.curriculum(0.5)
    s.sizes = ((448, 336), (448, 448), (512, 384))
    s.noise, s.rotate_deg = 0.3, 2.0
    if kind == "sign":
        # single Korean words: the small model reads them (the seventh run: one in five exactly) where it
        # reads no English word yet; the page's notice says so
        s.text_share, s.min_items, s.max_items, s.min_text = 1.0, 2, 3, 2
        s.hangul_share, s.max_words, s.min_font = 1.0, 1, 26
    elif kind == "shapes":
        s.text_share, s.min_items, s.max_items, s.min_shapes = 0.0, 3, 5, 3
    else:
        s.min_items, s.max_items, s.min_text, s.min_shapes = 4, 5, 2, 2
    return s


def scene(kind, seed, vocab):
    rng = random.Random(SAMPLE_SALT + KINDS.index(kind) * 1_000_003 + seed)
    return scenes.make_scene(rng, spec(kind), vocab, with_labels=False)


def truth_of(name, sc):
    w, h = sc.image.size
    return {"image": name, "w": w, "h": h, "items": [it.truth() for it in sc.items]}


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("candidates")
    c.add_argument("--out", required=True)
    c.add_argument("--n", type=int, default=24)
    c.add_argument("--kinds", default=",".join(KINDS), help="which kinds, comma-separated")
    w = sub.add_parser("write")
    w.add_argument("--out", required=True)
    w.add_argument("--truth", required=True)
    w.add_argument("picks", nargs="+", help="KIND=SEED")
    a = ap.parse_args()
    vocab = scenes.Vocab(common.TOKENIZER, common.DEFAULT_SHAPE["hangul"])
    os.makedirs(a.out, exist_ok=True)
    if a.cmd == "candidates":
        truth, requests = [], []
        kinds = a.kinds.split(",")
        if any(k not in KINDS for k in kinds):
            raise SystemExit(f"--kinds: each one of {', '.join(KINDS)}")
        for kind in kinds:
            for seed in range(a.n):
                name = f"{kind}-{seed:03d}.png"
                sc = scene(kind, seed, vocab)
                sc.image.save(os.path.join(a.out, name))
                truth.append({"scene": f"{kind}-{seed:03d}", **truth_of(name, sc)})
                # what the demo asks of each sample (the browser test: grounding in both languages, OCR)
                tasks = [("ocr", "<ocr>")] if kind == "sign" else [
                    ("gro", common.gro_prompt(False)), ("gro-ko", common.gro_prompt(True))]
                for task, prompt in tasks:
                    requests.append({"id": f"{kind}-{seed:03d}/{task}", "image": name, "prompt": prompt})
        with open(os.path.join(a.out, "truth.jsonl"), "w") as f:
            f.writelines(json.dumps(t, ensure_ascii=False) + "\n" for t in truth)
        with open(os.path.join(a.out, "requests.jsonl"), "w") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in requests)
        print(f"{a.out}: {len(truth)} candidates, {len(requests)} requests")
        return
    out = {}
    for pick in a.picks:
        kind, seed = pick.split("=")
        if kind not in KINDS:
            raise SystemExit(f"{pick}: the kind is one of {', '.join(KINDS)}")
        sc = scene(kind, int(seed), vocab)
        name = f"{kind}.png"
        sc.image.save(os.path.join(a.out, name), optimize=True)
        out[kind] = {"seed": int(seed), **truth_of(name, sc)}
    tmp = a.truth + ".partial"
    with open(tmp, "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    os.replace(tmp, a.truth)
    print(f"{a.out}: {', '.join(out)}; truth in {a.truth}")


if __name__ == "__main__":
    main()
