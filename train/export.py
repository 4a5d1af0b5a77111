#!/usr/bin/env python3
"""A training checkpoint (train.pt) as a checkpoint in NCSOFT/VARCO-VISION-14B-HF's layout, for `varco convert`.

    python3 train/export.py --ckpt CKPT/train.pt --out DIR

Writes float32 weights under transformers 4.47's names (as ../shared/fixtures/generate.py does), config.json,
the tokenizer, the chat template and the processor's configs. The auxiliary heads stay behind. A tied
embedding is written once (`language_model.model.embed_tokens.weight`; no `lm_head`), which is how
`varco convert --lm-head q4` finds a tied head.
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


def hf_layout_state(model, tied):
    out = {}
    for k, val in model.state_dict().items():
        if k.startswith("model.language_model."):
            k = "language_model.model." + k[len("model.language_model."):]
        elif k == "lm_head.weight":
            if tied:
                continue
            k = "language_model.lm_head.weight"
        elif k.startswith("model."):
            k = k[len("model."):]
        out[k] = val.detach().float().contiguous().clone()
    return out


def write_checkpoint(model, shape, state, out):
    """config, tokenizer, chat template, processor configs and `state` (name -> tensor) into `out`."""
    tmp = out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_file(state, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    cfg = model.config.to_dict()
    cfg["torch_dtype"] = "float32"
    cfg.pop("dtype", None)
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    tok, ip, _ = common.build_processor(shape)
    tok.save_pretrained(tmp)
    shutil.copyfile(common.TOKENIZER, os.path.join(tmp, "tokenizer.json"))
    ip.save_pretrained(tmp)
    with open(os.path.join(tmp, "chat_template.json"), "w") as f:
        json.dump({"chat_template": common.CHAT_TEMPLATE}, f, indent=1)
    cells = (shape["tile"] // shape["patch"]) ** 2
    with open(os.path.join(tmp, "processor_config.json"), "w") as f:
        json.dump({"image_token": "<image>", "num_image_tokens": cells, "processor_class": "LlavaOnevisionProcessor",
                   "video_token": "<video>", "vision_feature_select_strategy": "full"}, f, indent=1)
    with open(os.path.join(tmp, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 151643, "eos_token_id": common.IM_END}, f, indent=1)
    with open(os.path.join(tmp, "shape.json"), "w") as f:
        json.dump(shape, f, indent=1)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def load_trained(ckpt):
    from transformers import LlavaOnevisionForConditionalGeneration
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    shape = state["shape"]
    model = LlavaOnevisionForConditionalGeneration(common.build_config(shape))
    model.load_state_dict(state["model"])
    return model.eval(), shape, state


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    model, shape, state = load_trained(a.ckpt)
    write_checkpoint(model, shape, hf_layout_state(model, model.config.tie_word_embeddings), a.out)
    print(f"{a.out}: step {state['step']}, {state['spent'] / 60:.1f} min trained")


if __name__ == "__main__":
    main()
