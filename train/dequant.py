#!/usr/bin/env python3
"""A converted model (manifest.json + shards) read back into a float32 checkpoint in the -HF layout.

    python3 train/dequant.py --model CONVERTED --like CHECKPOINT --out DIR

The weights are exactly the values our engine multiplies with: every q4/q8 group decoded by the rule of
docs/FORMAT.md part 1 (written here from that text, not from the Rust code), f16 rows unpadded, fused
matrices (q/k/v, gate/up) split again. Where the converter folded an RMSNorm's weight into the matrix after
it (q/k/v, gate/up, a separate lm_head in a quantized format), the folded matrix is kept and the norm's
weight becomes ones: transformers then computes `W_folded · x̂`, the same function as the engine. Config,
tokenizer and templates come from CHECKPOINT (the f32 export the model was converted from).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


class Stream:
    def __init__(self, model_dir, manifest):
        self.dir, self.m = model_dir, manifest
        self.shards = [open(os.path.join(model_dir, s["file"]), "rb").read() for s in manifest["shards"]]

    def bytes(self, ref):
        """An array's bytes: it may run on from its shard into the next ones."""
        out, shard, off, left = bytearray(), ref["shard"], ref["offset"], ref["length"]
        while left > 0:
            piece = self.shards[shard][off:off + left]
            if not piece:
                raise ValueError(f"array {ref} runs past the last shard")
            out += piece
            left -= len(piece)
            shard, off = shard + 1, 0
        return bytes(out)


def decode_matrix(st, t):
    n, k, fmt = t["n"], t["k"], t["format"]
    data = st.bytes(t["data"])
    if fmt == "f16":
        kp = len(data) // (2 * n)        # rows zero-padded to kp values
        return np.frombuffer(data, np.float16).reshape(n, kp)[:, :k].astype(np.float32)
    groups = (k + 31) // 32
    scales = np.frombuffer(st.bytes(t["scales"]), np.float16)[: n * groups].astype(np.float32).reshape(n, groups)
    words = np.frombuffer(data, np.uint32)
    if fmt == "q4":
        w = words[: n * groups * 4].reshape(n, groups, 4)
        # value j of a group: bits 4*(j % 8) .. +3 of word j // 8
        shifts = (4 * np.arange(8, dtype=np.uint32))
        codes = ((w[..., :, None] >> shifts) & 0xF).reshape(n, groups, 32).astype(np.int32) - 8
    elif fmt == "q8":
        w = words[: n * groups * 8].reshape(n, groups, 8)
        shifts = (8 * np.arange(4, dtype=np.uint32))
        codes = ((w[..., :, None] >> shifts) & 0xFF).reshape(n, groups, 32).astype(np.int32) - 128
    else:
        raise ValueError(f"{t['name']}: unknown format {fmt}")
    vals = codes.astype(np.float32) * scales[..., None]
    return vals.reshape(n, groups * 32)[:, :k]


def decode_vector(st, t):
    return np.frombuffer(st.bytes(t["data"]), np.float32)[: t["len"]].copy()


def folds(fmt):
    return fmt in ("q4", "q8")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a directory made by varco convert")
    ap.add_argument("--like", required=True, help="the checkpoint it was converted from (config, tokenizer)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with open(os.path.join(a.model, "manifest.json")) as f:
        m = json.load(f)
    st = Stream(a.model, m)
    tensors = {t["name"]: t for t in m["tensors"]}
    get = lambda name: decode_matrix(st, tensors[name]) if tensors[name]["kind"] == "matrix" else decode_vector(st, tensors[name])
    cfg = m["config"]
    tc, vc = cfg["text"], cfg["vision"]
    out = {}
    T = lambda x: torch.from_numpy(np.ascontiguousarray(x, np.float32))

    vh, p = vc["hidden"], vc["patch_size"]
    e = "vision_tower.embeddings"
    out[f"{e}.patch_embedding.weight"] = T(get("vision.patch").reshape(vh, 3, p, p))
    out[f"{e}.patch_embedding.bias"] = T(get("vision.patch_bias"))
    out[f"{e}.position_embedding.weight"] = T(get("vision.pos").reshape(-1, vh))
    for i in range(vc["layers"]):
        l, o = f"vision_tower.encoder.layers.{i}", f"vision.{i}"
        qkv, qb = get(f"{o}.qkv"), get(f"{o}.qkv_bias")
        for j, name in enumerate(["q_proj", "k_proj", "v_proj"]):
            out[f"{l}.self_attn.{name}.weight"] = T(qkv[j * vh:(j + 1) * vh])
            out[f"{l}.self_attn.{name}.bias"] = T(qb[j * vh:(j + 1) * vh])
        out[f"{l}.self_attn.out_proj.weight"] = T(get(f"{o}.out"))
        out[f"{l}.self_attn.out_proj.bias"] = T(get(f"{o}.out_bias"))
        for src, dst in [("ln1_w", "layer_norm1.weight"), ("ln1_b", "layer_norm1.bias"), ("ln2_w", "layer_norm2.weight"),
                         ("ln2_b", "layer_norm2.bias"), ("fc1", "mlp.fc1.weight"), ("fc1_bias", "mlp.fc1.bias"),
                         ("fc2", "mlp.fc2.weight"), ("fc2_bias", "mlp.fc2.bias")]:
            out[f"{l}.{dst}"] = T(get(f"{o}.{src}"))
    for src, dst in [("projector.fc1", "multi_modal_projector.linear_1.weight"),
                     ("projector.fc1_bias", "multi_modal_projector.linear_1.bias"),
                     ("projector.fc2", "multi_modal_projector.linear_2.weight"),
                     ("projector.fc2_bias", "multi_modal_projector.linear_2.bias"), ("image_newline", "image_newline")]:
        out[dst] = T(get(src))

    h, d = tc["hidden"], tc["head_dim"]
    qn, kvn, ffn = tc["heads"] * d, tc["kv_heads"] * d, tc["intermediate"]
    out["language_model.model.embed_tokens.weight"] = T(get("llm.embed"))
    for i in range(tc["layers"]):
        l, o = f"language_model.model.layers.{i}", f"llm.{i}"
        qkv, qb = get(f"{o}.qkv"), get(f"{o}.qkv_bias")
        cuts = [0, qn, qn + kvn, qn + 2 * kvn]
        for j, name in enumerate(["q_proj", "k_proj", "v_proj"]):
            out[f"{l}.self_attn.{name}.weight"] = T(qkv[cuts[j]:cuts[j + 1]])
            out[f"{l}.self_attn.{name}.bias"] = T(qb[cuts[j]:cuts[j + 1]])
        out[f"{l}.self_attn.o_proj.weight"] = T(get(f"{o}.o"))
        gu = get(f"{o}.gate_up")
        out[f"{l}.mlp.gate_proj.weight"], out[f"{l}.mlp.up_proj.weight"] = T(gu[:ffn]), T(gu[ffn:])
        out[f"{l}.mlp.down_proj.weight"] = T(get(f"{o}.down"))
        in_norm, post_norm = get(f"{o}.in_norm"), get(f"{o}.post_norm")
        out[f"{l}.input_layernorm.weight"] = T(np.ones_like(in_norm) if folds(tensors[f"{o}.qkv"]["format"]) else in_norm)
        out[f"{l}.post_attention_layernorm.weight"] = T(
            np.ones_like(post_norm) if folds(tensors[f"{o}.gate_up"]["format"]) else post_norm)
    norm = get("llm.norm")
    if "llm.lm_head" in tensors:
        if folds(tensors["llm.lm_head"]["format"]):
            norm = np.ones_like(norm)
        out["language_model.lm_head.weight"] = T(get("llm.lm_head"))
    out["language_model.model.norm.weight"] = T(norm)

    import shutil
    from safetensors.torch import load_file, save_file
    # what the engine does not use (SigLIP's post_layernorm: the features are taken before it) as it was
    like = load_file(os.path.join(a.like, "model.safetensors"))
    for k, v in like.items():
        if "post_layernorm" in k:
            out[k] = v.float()
    missing, extra = set(like) - set(out), set(out) - set(like) - {"language_model.lm_head.weight"}
    if missing or extra:
        raise SystemExit(f"the converted model does not map onto {a.like}: missing {sorted(missing)}, extra {sorted(extra)}")
    for k, v in out.items():
        if k in like and tuple(like[k].shape) != tuple(v.shape):
            raise SystemExit(f"{k}: {tuple(v.shape)} from the converted model, {tuple(like[k].shape)} in {a.like}")
    tmp = a.out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(a.like, tmp, ignore=shutil.ignore_patterns("*.safetensors", "*.safetensors.index.json"))
    with open(os.path.join(a.like, "config.json")) as f:
        hf_cfg = json.load(f)
    # a tied head written as its own tensor (the converter stored it apart) unties the checkpoint
    if "language_model.lm_head.weight" in out:
        hf_cfg["tie_word_embeddings"] = False
        hf_cfg.get("text_config", {})["tie_word_embeddings"] = False
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(hf_cfg, f, indent=1)
    save_file(out, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    shutil.rmtree(a.out, ignore_errors=True)
    os.replace(tmp, a.out)
    print(f"{a.out}: {len(out)} tensors dequantized from {a.model}")


if __name__ == "__main__":
    main()
