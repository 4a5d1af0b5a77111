#!/usr/bin/env python3
"""Held-out scenes, and transformers' answers on them.

    python3 train/evaluate.py scenes --out DIR [--seed 4242] [--n 500]
    python3 train/evaluate.py answer --model CHECKPOINT --scenes DIR --out ANSWERS.jsonl [--limit N]

`scenes` writes DIR/NNNN.png, DIR/truth.jsonl (every item of every scene, its box in pixels) and
DIR/requests.jsonl (three questions a scene: OCR, grounding, referring; the language alternates), the same
requests that `varco run --batch` answers with our engine. `answer` runs transformers (float32, greedy) on a
checkpoint -- the f32 export, or the 4-bit model read back by dequant.py -- and writes one JSON line per
request: {"id", "text"}. `score.py` compares any answers file with the truth.

The held-out seed is never a training seed: training draws scene `seed * 1_000_003 + index` with its own
seed (train.py), evaluation draws `EVAL_SALT + seed * 1_000_003 + index`.
"""
import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import scenes  # noqa: E402

EVAL_SALT = 7_777_777_777_777


def eval_spec(progress=1.0):
    """The hardest point of the training curriculum (or the point `progress` of it: fonts, rotation, noise and
    the number of items as training saw them there), with at least two texts and two shapes a scene."""
    s = scenes.curriculum(progress)
    s.min_items, s.max_items, s.min_text, s.min_shapes = 4, max(4, round(7 * s.max_items / 8)), 2, 2
    return s


def make_scenes(out, seed, n, shape, progress=1.0):
    os.makedirs(out, exist_ok=True)
    vocab = scenes.Vocab(common.TOKENIZER, shape["hangul"])
    spec = eval_spec(progress)
    truth, requests = [], []
    for i in range(n):
        rng = random.Random(EVAL_SALT + seed * 1_000_003 + i)
        sc = scenes.make_scene(rng, spec, vocab, with_labels=False)
        w, h = sc.image.size
        name = f"{i:04d}.png"
        sc.image.save(os.path.join(out, name))
        items = [it.truth() for it in sc.items]
        ko = i % 2 == 1
        target = rng.randrange(len(sc.items))
        box = common.jitter_box(rng, sc.items[target].box, w, h)
        truth.append({"scene": i, "image": name, "w": w, "h": h, "items": items, "refer_target": target,
                      "refer_ko": ko})
        for task, prompt in [("ocr", "<ocr>"), ("gro", common.gro_prompt(ko)), ("refer", common.refer_prompt(box, ko))]:
            requests.append({"id": f"{i:04d}/{task}", "image": name, "prompt": prompt})
    with open(os.path.join(out, "truth.jsonl"), "w") as f:
        for t in truth:
            f.write(json.dumps(t, ensure_ascii=False) + "\n")
    with open(os.path.join(out, "requests.jsonl"), "w") as f:
        for r in requests:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    texts = [it for t in truth for it in t["items"] if it["kind"] == "text"]
    ko_share = sum(it["korean"] for it in texts) / max(len(texts), 1)
    print(f"{out}: {n} scenes, {sum(len(t['items']) for t in truth)} items, {len(texts)} texts "
          f"({100 * ko_share:.0f} % Hangul), {len(requests)} requests")


def answer_batch(model, proc, tok, scene_dir, part, dev, max_new_tokens):
    """Greedy answers of `model` to the requests `part` (their images in `scene_dir`), one batch: [{"id",
    "text"}]. `tok` pads on the left. Also `train.py`'s answers while it trains (`FreeRun`)."""
    import torch
    from PIL import Image
    texts = [proc.apply_chat_template(common.conversation([(r["prompt"], None)]), add_generation_prompt=True,
                                      tokenize=False) for r in part]
    images = [Image.open(os.path.join(scene_dir, r["image"])).convert("RGB") for r in part]
    enc = proc(images=images, text=texts, return_tensors="pt", padding=True).to(dev)
    with torch.no_grad():
        gen = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=151643,
                             eos_token_id=common.IM_END)
    out = []
    for r, g in zip(part, gen[:, enc["input_ids"].shape[1]:]):
        text = tok.decode([int(t) for t in g if int(t) != 151643], skip_special_tokens=False)
        out.append({"id": r["id"], "text": text.split("<|im_end|>")[0]})
    return out


def answer(model_dir, scene_dir, out, limit, batch, max_new_tokens):
    import torch
    from transformers import LlavaOnevisionForConditionalGeneration
    with open(os.path.join(model_dir, "shape.json")) as f:
        shape = json.load(f)
    tok, ip, proc = common.build_processor(shape)
    tok.padding_side = "left"
    # float32 without TF32 on a GPU where there is one: the reference must not round more than our f32 path
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).to(dev).eval()
    with open(os.path.join(scene_dir, "requests.jsonl")) as f:
        reqs = [json.loads(l) for l in f]
    if limit:
        reqs = reqs[:limit]
    with open(out + ".partial", "w") as f:
        for s in range(0, len(reqs), batch):
            for a in answer_batch(model, proc, tok, scene_dir, reqs[s:s + batch], dev, max_new_tokens):
                f.write(json.dumps(a, ensure_ascii=False) + "\n")
            f.flush()
            print(f"{min(s + batch, len(reqs))}/{len(reqs)}", file=sys.stderr, flush=True)
    os.replace(out + ".partial", out)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scenes")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=4242)
    s.add_argument("--n", type=int, default=500)
    s.add_argument("--shape", help="the model's sizes (for the Hangul inventory); default common.DEFAULT_SHAPE")
    s.add_argument("--progress", type=float, default=1.0,
                   help="the curriculum's point whose fonts, rotation, noise and item count the scenes take "
                        "(default its end; lower: what a shorter training saw)")
    r = sub.add_parser("answer")
    r.add_argument("--model", required=True)
    r.add_argument("--scenes", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--limit", type=int, default=0)
    r.add_argument("--batch", type=int, default=8)
    r.add_argument("--max-new-tokens", type=int, default=256)
    a = ap.parse_args()
    if a.cmd == "scenes":
        make_scenes(a.out, a.seed, a.n, common.load_shape(a.shape) if a.shape else common.DEFAULT_SHAPE, a.progress)
    else:
        answer(a.model, a.scenes, a.out, a.limit, a.batch, a.max_new_tokens)


if __name__ == "__main__":
    main()
