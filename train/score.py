#!/usr/bin/env python3
"""Scores answers against the held-out scenes' truth: OCR and grounding precision, recall and F1 at IoU >= 0.5,
referring accuracy.

    python3 train/score.py --scenes DIR ANSWERS.jsonl [ANSWERS2.jsonl ...] [--json OUT]

Any engine's answers: one JSON line per request, {"id": "0007/ocr", "text": "..."} (evaluate.py writes them
for transformers, `varco run --batch` for ours). Needs only the standard library: the scorer knows nothing of
either engine.

- OCR: every `<char>T</char><bbox>B</bbox>` of the answer is a prediction (several boxes joined by `<delim>`
  are several predictions); it is right when T is exactly a text of the scene and B overlaps that text's box
  with IoU >= 0.5, each truth matched at most once.
- Grounding: every `<obj>P</obj><bbox>B</bbox>` box is a prediction; P names a shape of the scene ("a red
  circle", "2 red circles", "빨간 원", "빨간 원 2개" all name "red circle") and B overlaps it with IoU >= 0.5.
- Referring: the answer names the item in the question's box -- its colour and shape (in the question's
  language) or, for a text, its exact words.
"""
import argparse
import json
import os
import re

BOX = re.compile(r"<bbox>(.*?)</bbox>", re.S)
CHAR = re.compile(r"<char>(.*?)</char>\s*<bbox>(.*?)</bbox>", re.S)
OBJ = re.compile(r"<obj>(.*?)</obj>\s*<bbox>(.*?)</bbox>", re.S)


def parse_boxes(s):
    out = []
    for part in s.split("<delim>"):
        try:
            v = [float(x) for x in part.split(",")]
        except ValueError:
            continue
        if len(v) == 4:
            out.append(v)
    return out


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def norm_box(box, w, h):
    return [box[0] / w, box[1] / h, box[2] / w, box[3] / h]


def match(preds, truths, same):
    """Greedy one-to-one matching by IoU (highest first) among pairs with the same name and IoU >= 0.5."""
    pairs = sorted(((iou(p[1], t[1]), i, j) for i, p in enumerate(preds) for j, t in enumerate(truths)
                    if same(p[0], t[0])), reverse=True)
    used_p, used_t, n = set(), set(), 0
    for v, i, j in pairs:
        if v < 0.5:
            break
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            n += 1
    return n


ARTICLE = re.compile(r"^(a|an|the|\d+)\s+")
COUNT_KO = re.compile(r"\s*\d+\s*개$")


def shape_name(phrase):
    """The colour-and-shape name a grounding phrase gives, in the language it is in."""
    p = phrase.strip().lower()
    p = COUNT_KO.sub("", ARTICLE.sub("", p))
    if p.endswith("sses"):
        p = p[:-2]
    elif p.endswith("s") and not p.endswith("ss"):
        p = p[:-1]
    return p


def score(truth, answers):
    by_id = {a["id"]: a["text"] for a in answers}
    ocr = {"pred": 0, "truth": 0, "hit": 0}
    gro = {"pred": 0, "truth": 0, "hit": 0}
    ref = {"n": 0, "hit": 0}
    missing = 0
    for t in truth:
        sid = f"{t['scene']:04d}"
        w, h = t["w"], t["h"]
        items = t["items"]
        # OCR
        text = by_id.get(f"{sid}/ocr")
        missing += text is None
        preds = [(m[0].strip(), b) for m in CHAR.findall(text or "") for b in parse_boxes(m[1])]
        truths = [(it["text"], norm_box(it["box"], w, h)) for it in items if it["kind"] == "text"]
        ocr["pred"] += len(preds)
        ocr["truth"] += len(truths)
        ocr["hit"] += match(preds, truths, lambda a, b: a == b)
        # grounding
        text = by_id.get(f"{sid}/gro")
        missing += text is None
        preds = [(shape_name(m[0]), b) for m in OBJ.findall(text or "") for b in parse_boxes(m[1])]
        truths = [((it["label_en"], it["label_ko"]), norm_box(it["box"], w, h)) for it in items if it["kind"] == "shape"]
        gro["pred"] += len(preds)
        gro["truth"] += len(truths)
        gro["hit"] += match(preds, truths, lambda a, b: a in b)
        # referring
        text = by_id.get(f"{sid}/refer")
        missing += text is None
        it = items[t["refer_target"]]
        want = it["text"] if it["kind"] == "text" else (it["label_ko"] if t["refer_ko"] else it["label_en"])
        ref["n"] += 1
        ref["hit"] += want.lower() in (text or "").lower() if it["kind"] == "shape" else want in (text or "")
    out = {"scenes": len(truth), "missing_answers": missing}
    for name, c in [("ocr", ocr), ("grounding", gro)]:
        p = c["hit"] / c["pred"] if c["pred"] else 0.0
        r = c["hit"] / c["truth"] if c["truth"] else 0.0
        out[name] = {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r) if p + r else 0.0, 4),
                     **c}
    out["referring"] = {"accuracy": round(ref["hit"] / ref["n"] if ref["n"] else 0.0, 4), **ref}
    return out


def load_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", required=True)
    ap.add_argument("answers", nargs="+")
    ap.add_argument("--json", help="also write the scores as JSON")
    a = ap.parse_args()
    truth = load_jsonl(os.path.join(a.scenes, "truth.jsonl"))
    results = {}
    print(f"{'answers':40} {'OCR P':>6} {'R':>6} {'F1':>6}  {'gro P':>6} {'R':>6} {'F1':>6}  {'refer':>6}  missing")
    for path in a.answers:
        s = score(truth, load_jsonl(path))
        results[path] = s
        o, g = s["ocr"], s["grounding"]
        print(f"{os.path.basename(path)[:40]:40} {o['precision']:6.3f} {o['recall']:6.3f} {o['f1']:6.3f}  "
              f"{g['precision']:6.3f} {g['recall']:6.3f} {g['f1']:6.3f}  {s['referring']['accuracy']:6.3f}  "
              f"{s['missing_answers']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
