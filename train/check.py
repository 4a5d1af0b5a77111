#!/usr/bin/env python3
"""Self-checks of the training pipeline against transformers itself (needs torch and transformers, so it runs
where training runs: `train/run-h200.sh` calls it first and stops on a failure; CI's `test_train.py` covers
the rest).

1. `common.tiles_u8` gives exactly the processor's tiles (as 8-bit levels) for many image sizes.
2. `common.expand_image` gives exactly the processor's input ids.
3. `common.tile_labels` reads each patch's label where the processor's tile shows that label's pixels: on an
   image of flat 16-pixel blocks, the processor's pixel at a patch centre has the colour of the block that
   `tile_labels` names, wherever the centre is not near a block edge (where bicubic blends).
4. `train.image_places` (where each image token lies, for AttendWhere) agrees with the labels: packed the same
   way, every image token that shows a shape or a character lies inside (within a patch of) the box of an
   item of that kind, and as many image tokens as the ids hold.
5. `train.AttendWhere`'s attention mass on the target places equals what transformers' eager attention weights
   put there, for the supervised heads of a small random model (GQA included).
"""
import os
import random
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main():
    shape = common.DEFAULT_SHAPE
    tile, patch = shape["tile"], shape["patch"]
    tok, ip, proc = common.build_processor(shape)
    rng = random.Random(1)
    sizes = [(224, 224), (448, 336), (640, 480), (3000, 100), (100, 3000), (1, 1), (1500, 1499)]
    sizes += [(rng.randint(1, 1600), rng.randint(1, 1600)) for _ in range(25)]
    for w, h in sizes:
        img = Image.fromarray(np.random.default_rng(w * 7919 + h).integers(0, 256, (h, w, 3), dtype=np.uint8))
        pv = ip(images=img, return_tensors="np")["pixel_values"][0]
        want = np.clip(np.rint((pv + 1.0) * 127.5), 0, 255).astype(np.uint8)
        got = common.tiles_u8(img, tile, ip.image_grid_pinpoints)
        assert got.shape == want.shape and np.array_equal(got, want), f"tiles differ at {w}x{h}"
        text = proc.apply_chat_template(common.conversation([("<ocr>", "x")]), tokenize=False)
        want_ids = proc(images=img, text=text, return_tensors="np")["input_ids"][0].tolist()
        got_ids = common.expand_image(proc, tok(text, add_special_tokens=False)["input_ids"], (w, h))
        assert got_ids == want_ids, f"input ids differ at {w}x{h}"
    print(f"tiles and ids: {len(sizes)} sizes agree with the processor")

    # sizes that are pinpoints are cut without resizing (but for the base tile): every grid patch must agree;
    # resized ones agree where the centre is far enough from a block edge for bicubic to keep the colour
    # (a label map off by half a block or more would agree at chance, under 1 %)
    for w, h, exact in [(224, 224, True), (448, 448, True), (672, 448, True), (640, 480, False), (300, 200, False),
                        (500, 900, False), (1000, 250, False)]:
        checked = agree = 0
        g = np.random.default_rng(w + h)
        bw, bh = -(-w // 16), -(-h // 16)
        palette = g.integers(0, 256, (bw * bh, 3), dtype=np.uint8)
        ids = np.arange(bw * bh).reshape(bh, bw).repeat(16, 0).repeat(16, 1)[:h, :w]
        img = Image.fromarray(palette[ids])
        labels = np.stack([ids % 30000, ids // 30000, np.zeros_like(ids)], -1).astype(np.int64)
        lab = common.tile_labels(labels, ip.image_grid_pinpoints, tile, patch)
        tiles = common.tiles_u8(img, tile, ip.image_grid_pinpoints)
        assert lab.shape[0] == tiles.shape[0], (lab.shape, tiles.shape)
        c = np.arange(patch // 2, tile, patch)[: tile // patch]
        for t in range(tiles.shape[0]):
            px = tiles[t][:, c][:, :, c].transpose(1, 2, 0).astype(int)      # [cells, cells, 3]
            block = lab[t, :, :, 0] + 30000 * lab[t, :, :, 1]
            want = palette[block].astype(int)
            # a patch centre reads its block's colour unless bicubic mixed in a neighbour: count clear cases
            near = np.abs(px - want).max(-1) <= 2
            checked += block.size
            agree += int(near.sum())
            if exact and t > 0:
                assert near.all(), f"tile_labels at {w}x{h}, tile {t}: a grid tile cut without resizing disagrees"
        share = agree / checked
        print(f"tile_labels at {w}x{h}: {share:.1%} of {checked} patch centres show the block it names")
        assert share >= 0.4, f"tile_labels at {w}x{h}: only {share:.1%} of patch centres show the block it names"

    import torch
    import scenes
    import train
    vocab = scenes.Vocab(common.TOKENIZER, shape["hangul"])
    checked = 0
    for seed in range(12):
        sc = scenes.make_scene(random.Random(seed), scenes.curriculum(seed / 11), vocab)
        w, h = sc.image.size
        places = train.image_places(common.tile_coords(w, h, ip.image_grid_pinpoints, tile, patch), (h, w), shape)
        lab = common.tile_labels(sc.labels, ip.image_grid_pinpoints, tile, patch).reshape(-1, (tile // patch) ** 2, 3)
        packed = train.image_places(lab[..., [0, 2]].astype(np.float32), (h, w), shape)   # shape, char classes
        text = proc.apply_chat_template(common.conversation([("<ocr>", "x")]), tokenize=False)
        n = common.expand_image(proc, tok(text, add_special_tokens=False)["input_ids"], (w, h)).count(common.IMAGE_TOKEN)
        assert len(places) == len(packed) == n, (len(places), len(packed), n)
        # the anyres_max_9 downscale blends labels: check exact class values only
        for (x, y), (cs, cc) in zip(places, packed):
            for kind, cls in (("shape", cs), ("text", cc)):
                if cls > 0 and float(cls).is_integer():
                    mx, my = patch / min(w, tile), patch / min(h, tile)
                    assert any(it.kind == kind and it.box[0] / w - mx <= x <= it.box[2] / w + mx and
                               it.box[1] / h - my <= y <= it.box[3] / h + my for it in sc.items), \
                        f"scene {seed}: an image token showing a {kind} at {x:.3f}, {y:.3f} is in no {kind}'s box"
                    checked += 1
    assert checked > 500, checked
    print(f"image places: {checked} labelled image tokens of 12 scenes lie in their items' boxes")

    from transformers import LlavaOnevisionForConditionalGeneration
    small = {"tile": tile, "patch": patch, "vision": {"hidden": 64, "heads": 2, "intermediate": 128, "layers": 2},
             "text": {"hidden": 64, "heads": 4, "kv_heads": 2, "intermediate": 128, "layers": 3}, "hangul": shape["hangul"]}
    batch = train.collate([train.sample(random.Random(k), train.curriculum(0.3, {}), small, train.MIX, 3, proc, ip,
                                        vocab, edges=k % 2 == 1) for k in range(3)])
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(common.build_config(small)).eval()
    cpu = torch.device("cpu")
    att = train.AttendWhere([1, 2], [0, 3], tile // patch)
    att.register(model)
    att.prepare(batch, cpu)
    with torch.no_grad():
        train.answers(model, batch, cpu)
    mine = [m.item() for m in att.mass]
    model.set_attn_implementation({"text_config": "eager"})
    with torch.no_grad():
        out = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          pixel_values=batch["pixels"].float() / 127.5 - 1, image_sizes=batch["image_sizes"],
                          output_attentions=True)
    q, target, _, valid = att.batch
    ref = []
    for layer in (1, 2):
        for h in (0, 3):
            w = out.attentions[layer][:, h]
            ref.append(((w.gather(1, q[..., None].expand(-1, -1, w.shape[-1])) * target).sum(-1)[valid]).mean().item())
    assert len(mine) == 4 and np.allclose(mine, ref, rtol=1e-3, atol=1e-6), (mine, ref)
    print(f"attend: the supervised heads' mass on their places {[round(v, 4) for v in mine]} is eager attention's")


if __name__ == "__main__":
    main()
