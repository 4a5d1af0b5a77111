#!/usr/bin/env python3
"""Reference answers of the trained model, computed by transformers, for our engine to reproduce.

    python3 train/fixtures.py --model DEQUANTIZED --scenes HELD_OUT --out tests/fixtures/trained

DEQUANTIZED is the converted 4-bit model read back by dequant.py, so that transformers and our engine compute
the same function (float32 activations on both sides) and any difference is the engine's. For a few held-out
scenes (one request of each task), writes `cases/<name>/` in the layout of ../shared/fixtures (see its
README): case.json (prompt, input ids, the greedy answer to its end, each step's top-1 margin) and
expected.safetensors (the top-20 logits of every step, teacher-forced along the answer), and the image.
"""
import argparse
import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

def dump_compact(obj):
    lines = ["{"]
    items = list(obj.items())
    for i, (k, v) in enumerate(items):
        lines.append(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}{',' if i + 1 < len(items) else ''}")
    return "\n".join(lines + ["}"]) + "\n"


def pick_scenes(truth, n_cases):
    """Scenes for the cases: the first OCR scene with both scripts, the first grounding scene with 3+ shapes,
    the first English referring question about a shape, the first Korean one."""
    out = []
    for t in truth:
        texts = [it for it in t["items"] if it["kind"] == "text"]
        if any(it["korean"] for it in texts) and any(not it["korean"] for it in texts):
            out.append(("ocr_ko_en", t, "ocr"))
            break
    for t in truth:
        if sum(it["kind"] == "shape" for it in t["items"]) >= 3 and all(t is not o[1] for o in out):
            out.append(("gro", t, "gro"))
            break
    for want_ko, name in [(False, "refer_shape"), (True, "refer_ko")]:
        for t in truth:
            if t["refer_ko"] == want_ko and t["items"][t["refer_target"]]["kind"] == ("shape" if not want_ko else "text"):
                if all(t is not o[1] for o in out):
                    out.append((name, t, "refer"))
                    break
    return out[:n_cases]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--scenes", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    a = ap.parse_args()
    from PIL import Image
    from transformers import LlavaOnevisionForConditionalGeneration
    with open(os.path.join(a.model, "shape.json")) as f:
        shape = json.load(f)
    tok, ip, proc = common.build_processor(shape)
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(a.model, dtype=torch.float32).eval()
    with open(os.path.join(a.scenes, "truth.jsonl")) as f:
        truth = [json.loads(l) for l in f]
    with open(os.path.join(a.scenes, "requests.jsonl")) as f:
        requests = {r["id"]: r for r in map(json.loads, f)}
    tmp = a.out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for name, t, task in pick_scenes(truth, 4):
        req = requests[f"{t['scene']:04d}/{task}"]
        img = Image.open(os.path.join(a.scenes, req["image"])).convert("RGB")
        conv = common.conversation([(req["prompt"], None)])
        prompt = proc.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
        inputs = proc(images=img, text=prompt, return_tensors="pt")
        ids = inputs["input_ids"]
        with torch.no_grad():
            gen = model.generate(**inputs, do_sample=False, max_new_tokens=a.max_new_tokens,
                                 eos_token_id=common.IM_END, pad_token_id=151643)
            new = gen[0, ids.shape[1]:]
            full = torch.cat([ids, new[None, :-1]], 1)
            fwd = dict(inputs)
            fwd["input_ids"], fwd["attention_mask"] = full, torch.ones_like(full)
            logits = model(**fwd).logits[0, ids.shape[1] - 1:].float()
        top = torch.topk(logits, 20, dim=-1)
        assert torch.equal(top.indices[:, 0], new), "teacher-forced argmax differs from generate()"
        srt = torch.sort(logits, dim=-1, descending=True).values
        margins = (srt[:, 0] - srt[:, 1]).tolist()
        d = os.path.join(tmp, "cases", name)
        os.makedirs(d)
        img.save(os.path.join(d, "image.png"))
        save_file({"step_top20_ids": top.indices.to(torch.int32).contiguous(),
                   "step_top20_logits": top.values.contiguous()}, os.path.join(d, "expected.safetensors"))
        meta = {"name": name, "scene": t["scene"], "task": task, "conversation": conv, "prompt_text": prompt,
                "image": "image.png", "image_size_wh": list(img.size), "n_image_tokens": int((ids == common.IMAGE_TOKEN).sum()),
                "input_ids_hf": ids[0].tolist(), "generated_ids": new.tolist(),
                "generated_text": tok.decode(new.tolist(), skip_special_tokens=False),
                "step_margins": margins, "min_margin": min(margins)}
        with open(os.path.join(d, "case.json"), "w") as f:
            f.write(dump_compact(meta))
        print(f"{name}: {meta['n_image_tokens']} image tokens, {len(new)} tokens, min margin {min(margins):.3f}: "
              f"{meta['generated_text'][:80]!r}")
    shutil.rmtree(a.out, ignore_errors=True)
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
