#!/usr/bin/env python3
"""Checks that QAT (`train.py --qat-from`) trains with exactly the weights `varco convert --lm-head q4` stores:
`fake_q4` applied as QAT applies it (q/k/v and gate/up with their RMSNorm's weight folded in, o/down as they
are, the tied embedding) to an f32 export, against the same export converted and read back by `dequant.py`;
with `--ckpt`, also the decoder's logits on a text prompt, the trained model with QAT on against transformers
on the dequantized checkpoint (equal to the last bit on the CPU at tiny size, 2026-12-06; 0.12 apart
without QAT).

    python3 train/qat_check.py --f32 EXPORT --dq DEQUANTIZED [--ckpt train.pt]   (run by `run-h200.sh finish`)
"""
import argparse
import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train import fake_q4  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--f32", required=True)
    ap.add_argument("--dq", required=True)
    ap.add_argument("--ckpt")
    a = ap.parse_args()
    f32 = load_file(os.path.join(a.f32, "model.safetensors"))
    dq = load_file(os.path.join(a.dq, "model.safetensors"))
    pre = "language_model.model."
    pairs = [(pre + "embed_tokens.weight", None)]
    layers = sorted({int(k[len(pre + "layers."):].split(".")[0]) for k in f32 if k.startswith(pre + "layers.")})
    for i in layers:
        lp = f"{pre}layers.{i}."
        pairs += [(lp + f"self_attn.{m}.weight", lp + "input_layernorm.weight") for m in ("q_proj", "k_proj", "v_proj")]
        pairs += [(lp + f"mlp.{m}.weight", lp + "post_attention_layernorm.weight") for m in ("gate_proj", "up_proj")]
        pairs += [(lp + "self_attn.o_proj.weight", None), (lp + "mlp.down_proj.weight", None)]
    worst, differ, total = 0.0, 0, 0
    for name, norm in pairs:
        w = f32[name] if norm is None else f32[name] * f32[norm][None, :]
        diff = (fake_q4(w) - dq[name]).abs()
        worst = max(worst, diff.max().item())
        differ += int((diff > 0).sum())
        total += diff.numel()
    print(f"qat_check: {len(pairs)} matrices, {total} weights; {differ} differ from the converter's, worst by {worst:.3g}")
    gap = 0.0
    if a.ckpt:
        gap = logits_gap(a.ckpt, a.dq)
        print(f"qat_check: the decoder's logits with QAT against the dequantized checkpoint's: max |diff| {gap:.3g}")
    sys.exit(1 if differ or gap > 1e-4 else 0)


def logits_gap(ckpt, dq):
    import common
    from train import QAT
    from transformers import LlavaOnevisionForConditionalGeneration
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    model = LlavaOnevisionForConditionalGeneration(common.build_config(state["shape"]))
    model.load_state_dict(state["model"])
    QAT().apply(model.eval())
    ref = LlavaOnevisionForConditionalGeneration.from_pretrained(dq, torch_dtype=torch.float32).eval()
    tok = common.build_processor(state["shape"])[0]
    ids = torch.tensor([tok("<|im_start|>user\nWhat does the sign say?<|im_end|>\n<|im_start|>assistant\n")["input_ids"]])
    with torch.no_grad():
        return (model(input_ids=ids).logits - ref(input_ids=ids).logits).abs().max().item()


if __name__ == "__main__":
    main()
