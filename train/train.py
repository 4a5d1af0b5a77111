#!/usr/bin/env python3
"""Train the demo's small VARCO-architecture model on synthetic scenes (run on the lent H200).

    python3 train/train.py --out CKPT [--minutes 9] [--budget-minutes 15] [--resume]

Every batch is a pure function of (seed, batch index): worker w of W builds batches w, w + W, ..., and the
DataLoader hands them out in index order, so the data does not depend on the number of workers, and a resumed
run continues with the batch after the last one trained. The learning-rate schedule follows the training
time spent so far against `--budget-minutes` (so a recipe fits its budget on any GPU), unless `--steps` fixes
it by step count.

Losses: cross-entropy on the answers' tokens (and each answer's closing <|im_end|>), plus an auxiliary
cross-entropy on the vision tower's last hidden states: small linear heads name, for every patch of every
tile, the character, the shape and the colour drawn at the patch's centre. The heads teach the tower to see
glyphs and shapes long before the language model learns to ask for them; they are not part of the exported
model. And `PatchWords`: the decoder's own last hidden states at the base tile's image tokens name the same
things as words, through the tied LM head. And `AttendWhere`: supervised heads of the decoder attend, from
each answer token about a place, to the image tokens that lie there.

`--replay R` trains each fresh batch about R times (the other steps retrain one of the last batches, drawn by
the seed): without it the scene workers, not the GPU, set the pace (5.8 fresh batches of 48 a second on 16
cores); with 3 the GPU does (the fourth run waited 0.06 of 11.5 minutes for data).
"""
import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import scenes  # noqa: E402

MIX = {"ocr": 0.35, "gro": 0.25, "refer": 0.2, "find": 0.1, "describe": 0.1}
# the options that define a recipe, kept in the checkpoint and restored on --resume (the time limits, the
# workers and the device are the run's own)
RECIPE_OPTIONS = ("batch", "lr", "aux_weight", "budget_minutes", "steps", "curriculum_samples", "mix", "spec",
                  "max_turns", "patch_words", "patch_words_rows", "patch_where", "replay_keep", "attend",
                  "attend_layers", "attend_heads", "attend_edges", "char_weight", "char_tiles", "pages", "spell", "qat_from")
# options that change how a run goes, not what it learns: kept in the checkpoint too, and restored on --resume
# unless given again (the sixth run's second call, not given `--sdp no-cudnn`, went back to cuDNN's attention)
RUN_OPTIONS = {"sdp": "any", "score_every": 0.0, "score_scenes": 32}


class Batches(torch.utils.data.IterableDataset):
    def __init__(self, shape, seed, batch, start, curriculum_samples, mix=MIX, max_turns=3, spec=None, edges=False,
                 pages=0):
        self.shape, self.seed, self.batch, self.start = shape, seed, batch, start
        self.curriculum_samples, self.mix, self.max_turns, self.spec = curriculum_samples, mix, max_turns, spec or {}
        self.edges, self.pages = edges, pages

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        tok, ip, proc = common.build_processor(self.shape)
        vocab = scenes.Vocab(common.TOKENIZER, self.shape["hangul"])
        b = self.start + wid          # the loader takes the workers in turn: batches start, start + 1, ...
        while True:
            yield self.make(b, proc, ip, vocab)
            b += nw

    def make(self, b, proc, ip, vocab):
        samples = []
        for k in range(self.batch):
            index = b * self.batch + k
            rng = random.Random(self.seed * 1_000_003 + index)
            spec = curriculum(index / self.curriculum_samples, self.spec)
            samples.append(sample(rng, spec, self.shape, self.mix, self.max_turns, proc, ip, vocab, self.edges))
        out = collate(samples)
        if self.pages:
            out.update(pages(self.seed, b, self.pages, curriculum(b * self.batch / self.curriculum_samples, self.spec),
                             self.shape, vocab))
        return out


PAGE_SEEDS = 10**12   # pages draw from seeds above every sample's (seed * 1_000_003 + sample index)


def pages(seed, b, n, spec, shape, vocab):
    """Batch `b`'s `n` text pages (`common.text_page`), for the character head alone: their 8-bit pixels
    [n, 3, tile, tile] and their patches' labels [n * cells², 3], in the order the tower's hidden states come."""
    drawn = [common.text_page(random.Random(seed * 1_000_003 + PAGE_SEEDS + b * n + k), spec, vocab, shape["tile"],
                              shape["patch"]) for k in range(n)]
    return {"page_pixels": torch.from_numpy(np.stack([page[0] for page in drawn])),
            "page_aux": torch.from_numpy(np.stack([page[1] for page in drawn]).reshape(-1, 3).astype(np.int64))}


def curriculum(progress, overrides):
    """The curriculum's scene spec at `progress`, with the fields `--spec` fixes replaced."""
    spec = scenes.curriculum(progress)
    for name, value in overrides.items():
        setattr(spec, name, value)
    return spec


def sample(rng, spec, shape, mix, max_turns, proc, ip, vocab, edges=False):
    """One training sample: a scene, 1 to `max_turns` questions about it, their ids, tiles and patch labels,
    which answer tokens are about which places (`attend_rows`) and where each image token lies (`image_places`)."""
    sc = scenes.make_scene(rng, spec, vocab)
    turns = [common.sample_turn(rng, sc, mix, edges) for _ in range(rng.randint(1, max_turns))]
    text = proc.apply_chat_template(common.conversation([(q, common.joined(p)) for q, p in turns]), tokenize=False)
    enc = proc.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    w, h = sc.image.size
    ids = common.expand_image(proc, enc["input_ids"], sc.image.size)
    rows = attend_rows(text, enc, turns, w, h, len(ids) - len(enc["input_ids"]))
    u8 = common.tiles_u8(sc.image, shape["tile"], ip.image_grid_pinpoints)
    lab = common.tile_labels(sc.labels, ip.image_grid_pinpoints, shape["tile"], shape["patch"])
    places = image_places(common.tile_coords(w, h, ip.image_grid_pinpoints, shape["tile"], shape["patch"]), (h, w), shape)
    if len(places) != ids.count(common.IMAGE_TOKEN):
        raise AssertionError(f"{len(places)} image places for {ids.count(common.IMAGE_TOKEN)} image tokens")
    return ids, common.answer_mask(ids), u8, (h, w), lab, rows, places


ASSISTANT_MARK = "<|im_start|>assistant\n"
MAX_BOXES = 8   # boxes a token may be about (a group's phrase names all its objects); more are merged


def attend_rows(text, enc, turns, w, h, shift):
    """[(query position, boxes)]: for each answer token about a place (`common.char_links`), the position of the
    token before it, whose query predicts it, in the expanded ids (`shift`: the image's extra tokens)."""
    links, pos = {}, 0
    for _, pieces in turns:
        ans = common.joined(pieces)
        at = text.index(ASSISTANT_MARK + ans, pos) + len(ASSISTANT_MARK)
        for k, link in enumerate(common.char_links(pieces, w, h)):
            if link:
                links[at + k] = link
        pos = at + len(ans)
    image = enc["input_ids"].index(common.IMAGE_TOKEN)
    rows = []
    for t, (s, e) in enumerate(enc["offset_mapping"]):
        boxes = sorted({b for c in range(s, e) for b in links.get(c, ())})
        if not boxes or t <= image:
            continue
        if len(boxes) > MAX_BOXES:
            boxes = [(min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))]
        rows.append((t + shift - 1, boxes))
    return rows


_PACK = {}


def image_places(coords, size_hw, shape):
    """Each image token's place (x, y as fractions of the image) in the order the model feeds them: the tiles'
    patch places packed by the model's own `pack_image_features` (unpadding, the anyres_max_9 downscale, a
    NaN place for each row's image_newline)."""
    from transformers.models.llava_onevision.modeling_llava_onevision import LlavaOnevisionModel
    if "owner" not in _PACK:   # what pack_image_features reads of its model: the config
        _PACK["owner"] = type("Owner", (), {"config": common.build_config(shape)})()
    feats, _ = LlavaOnevisionModel.pack_image_features(
        _PACK["owner"], image_features=[torch.from_numpy(coords)], image_sizes=torch.tensor([size_hw]),
        image_newline=torch.full((2,), float("nan")), vision_aspect_ratio="anyres_max_9")
    return feats[0].numpy()


def probe_batch(shape, seed, n, progress=0.5, mix=MIX, spec=None):
    """A fixed batch that no training step sees (negative sample indices), at the curriculum's middle."""
    tok, ip, proc = common.build_processor(shape)
    vocab = scenes.Vocab(common.TOKENIZER, shape["hangul"])
    sp = curriculum(progress, spec or {})
    return collate([sample(random.Random(seed * 1_000_003 - 1 - k), sp, shape, mix, 3,
                           proc, ip, vocab) for k in range(n)])


def answers(model, batch, dev, blank=False, full=False):
    """The decoder's last hidden states at the positions that predict an answer token, and those tokens; with
    `blank`, every pixel mid-grey (the probe's image-free control); with `full`, also all the last hidden
    states [batch, positions, width]."""
    pix = batch["pixels"].to(dev, non_blocking=True).float() / 127.5 - 1.0
    if blank:
        pix = torch.zeros_like(pix)
    out = model.model(input_ids=batch["input_ids"].to(dev, non_blocking=True),
                      attention_mask=batch["attention_mask"].to(dev, non_blocking=True), pixel_values=pix,
                      image_sizes=batch["image_sizes"].to(dev), use_cache=False)
    tgt = batch["labels"].to(dev, non_blocking=True)[:, 1:]
    sel = tgt != -100
    if full:
        return out.last_hidden_state[:, :-1][sel], tgt[sel], out.last_hidden_state
    return out.last_hidden_state[:, :-1][sel], tgt[sel]


def probe(model, lm_head, batch, dev, tag_ids, heads=None, captured=None):
    """Teacher-forced greedy accuracy on the answers' tokens of the probe batch, with its images and with blank
    ones (every pixel mid-grey). Where the two agree, the answers do not depend on the image: the model has
    learned the formats and the priors, not to look (what the first H200 run, 2026-12-05, did for 8.8 minutes
    while both losses sat flat). `box`/`box_blind`: the same over the tokens inside the answers' <bbox> ...
    </bbox> only (the digits and commas), where the runs so far failed; `read`/`read_blind`: over the tokens
    inside <char> ... </char> (the words an OCR answer reads). With the auxiliary heads, `see_shape`,
    `see_color`, `see_char`: their accuracy on the patches that show a shape, a colour, a character -- whether
    the vision tower sees what the decoder is asked to read (the fourth run's model read no word, 2026-12-06)."""
    model.eval()
    out = {}
    ids = batch["input_ids"]
    answer = batch["labels"][:, 1:] != -100
    inside = {}
    for name, (open_, close) in tag_ids.items():
        depth = torch.cumsum((ids == open_).int() - (ids == close).int(), 1)
        inside[name] = ((depth > 0) & (ids != open_))[:, 1:][answer].to(dev)
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        for suffix, blank in (("", False), ("_blind", True)):
            hid, tgt = answers(model, batch, dev, blank)
            right = (lm_head(hid).argmax(-1) == tgt).float()
            out["acc" + suffix] = round(right.mean().item(), 4)
            for name, sel in inside.items():
                out[name + suffix] = round(right[sel].mean().item(), 4) if sel.any() else None
            if not blank and heads is not None:
                out.update(heads.accuracy(captured["h"], batch["aux"].to(dev), batch["high"].to(dev)))
            if captured is not None:
                captured.pop("h", None)
    model.train()
    return out


def collate(samples):
    n = max(len(s[0]) for s in samples)
    t = max(s[2].shape[0] for s in samples)
    r = max([len(s[5]) for s in samples] + [1])
    B, T = len(samples), samples[0][2].shape[-1]
    ids = np.full((B, n), 151643, np.int64)
    att = np.zeros((B, n), np.int64)
    lab = np.full((B, n), -100, np.int64)
    pix = np.zeros((B, t, 3, T, T), np.uint8)
    places = np.full((B, n, 2), np.nan, np.float32)      # NaN: not an image token (inside no box)
    att_q = np.full((B, r), -1, np.int64)                 # -1: no row
    att_boxes = np.full((B, r, MAX_BOXES, 4), np.nan, np.float32)
    for i, (x, m, u8, _, _, rows, pl) in enumerate(samples):
        x, m = np.asarray(x, np.int64), np.asarray(m, bool)
        ids[i, :len(x)] = x
        att[i, :len(x)] = 1
        lab[i, :len(x)][m] = x[m]
        pix[i, :u8.shape[0]] = u8
        places[i, :len(x)][x == common.IMAGE_TOKEN] = pl
        for k, (q, boxes) in enumerate(rows):
            att_q[i, k] = q
            att_boxes[i, k, :len(boxes)] = boxes
    tiles = torch.tensor([s[2].shape[0] for s in samples])
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(att),
            "labels": torch.from_numpy(lab), "pixels": torch.from_numpy(pix),
            "image_sizes": torch.tensor([s[3] for s in samples]),
            "tiles": tiles,
            "aux": torch.from_numpy(np.concatenate([s[4] for s in samples]).astype(np.int64)),
            "places": torch.from_numpy(places), "att_q": torch.from_numpy(att_q),
            "att_boxes": torch.from_numpy(att_boxes), "high": high_tile_rows(tiles, samples[0][4][0].size // 3)}


class FreeRun:
    """The answers themselves, now and then during training (`--score-every`): greedy answers to the three
    held-out requests of `n` scenes (`evaluate.py`'s, from seed 4343: neither training's nor `finish`'s 4242),
    scored as `finish` scores (`score.py`). The sixth run's teacher-forced box accuracy ended 0.014 below the
    fifth's while its grounding F1 fell from 0.68 to 0.38 (2026-12-06): the probe's proxies hide what the
    answers do, and only `finish` showed it."""

    def __init__(self, shape, n, dev, max_new_tokens=160):
        import tempfile
        import evaluate
        import score
        self.dir = tempfile.mkdtemp(prefix="varco-freerun-")
        evaluate.make_scenes(self.dir, 4343, n, shape)
        self.truth = score.load_jsonl(os.path.join(self.dir, "truth.jsonl"))
        self.requests = score.load_jsonl(os.path.join(self.dir, "requests.jsonl"))
        self.tok, _, self.proc = common.build_processor(shape)
        self.tok.padding_side = "left"
        self.dev, self.max_new_tokens = dev, max_new_tokens
        self.score, self.answer_batch = score.score, evaluate.answer_batch

    def __call__(self, model, batch=48):
        model.eval()
        answers = []
        with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.dev.type == "cuda"):
            for s in range(0, len(self.requests), batch):
                answers += self.answer_batch(model, self.proc, self.tok, self.dir, self.requests[s:s + batch], self.dev,
                                             self.max_new_tokens)
        model.train()
        sc = self.score(self.truth, answers)
        return {"free_ocr": sc["ocr"]["f1"], "free_gro": sc["grounding"]["f1"], "free_refer": sc["referring"]["accuracy"]}


class AuxHeads(torch.nn.Module):
    def __init__(self, width, n_chars):
        super().__init__()
        self.shape = torch.nn.Linear(width, 1 + len(scenes.SHAPES))
        self.color = torch.nn.Linear(width, 1 + len(scenes.COLOR_NAMES))
        self.char = torch.nn.Linear(width, n_chars)

    def loss(self, hidden, aux, char_weight=1.0, char_rows=None, only_char=False):
        """Most patches show background (class 0): it weighs a tenth, so that the few patches on a glyph or a
        shape carry the loss. `char_weight` scales the character head's term; `char_rows` (a mask over the
        patches) limits it to those patches (`--char-tiles high`: not the base tile's); `only_char`: the
        character head's term alone (a text page shows no shape to name)."""
        h = hidden.reshape(-1, hidden.shape[-1]).float()
        a = aux.reshape(-1, 3)
        total = 0.0
        for head, col in ((self.char, 2),) if only_char else ((self.shape, 0), (self.color, 1), (self.char, 2)):
            logits = head(h)
            wt = torch.ones(logits.shape[-1], device=h.device)
            wt[0] = 0.1
            target = a[:, col]
            if col == 2 and char_rows is not None:
                target = target.masked_fill(~char_rows, -100)
            total = total + (char_weight if col == 2 else 1.0) * F.cross_entropy(logits, target, weight=wt, ignore_index=-100)
        return total

    def accuracy(self, hidden, aux, high):
        """Each head's accuracy over the patches whose label is not background; `see_char_high` over those not
        on a base tile (`high`: what `--char-tiles high` trains on)."""
        h = hidden.reshape(-1, hidden.shape[-1]).float()
        a = aux.reshape(-1, 3)
        out = {}
        for name, head, col, only in (("see_shape", self.shape, 0, None), ("see_color", self.color, 1, None),
                                      ("see_char", self.char, 2, None), ("see_char_high", self.char, 2, high)):
            sel = a[:, col] > 0
            if only is not None:
                sel = sel & only
            out[name] = round((head(h[sel]).argmax(-1) == a[sel, col]).float().mean().item(), 4) if sel.any() else None
        return out


def base_tile_hidden(hidden, batch, cells):
    """The decoder's hidden states [batch, cells, width] at each sample's first `cells` image tokens: its base
    tile (the whole image resized to one tile), in patch order."""
    ids = batch["input_ids"].to(hidden.device)
    start = (ids == common.IMAGE_TOKEN).int().argmax(1)                           # [B]
    pos = start[:, None] + torch.arange(cells, device=hidden.device)[None]        # [B, cells]
    return hidden.gather(1, pos[..., None].expand(-1, -1, hidden.shape[-1]))


def high_tile_rows(tiles, cells):
    """A mask over the batch's patches (tiles in order, `cells` patches each; made in `collate`, on the CPU):
    True but on each sample's base tile -- the whole image shrunk to one tile, where a 640-px scene's 20-px
    glyphs are 7 px and no head could name them: labels there only add noise to the character head."""
    first = torch.cumsum(tiles, 0) - tiles
    high = torch.ones(int(tiles.sum()), dtype=torch.bool)
    high[first] = False
    return high.repeat_interleave(cells)


class PatchWords:
    """The auxiliary loss on the decoder's image positions: at each of the base tile's image tokens (the whole
    image resized to one tile, the first `cells` image tokens of a sample, in patch order), the decoder's last
    hidden state must name, through the tied LM head, what the patch shows -- the colour word (" red"), the
    shape word (" circle"), the character ("A", "가") -- as the answers spell them. The first H200 run's
    decoder never learned to read its image tokens (answers that ignore the image, 2026-12-05): this puts the
    image tokens in the same space as the words the answers must copy, so that an answer position needs only
    to find the right image token, not also to learn what its features mean. Training only: nothing is added
    to the model."""

    def __init__(self, tok, vocab, dev, label_rows=False):
        def one(text):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            return ids[0] if len(ids) == 1 else -100
        shape = [-100] + [one(" " + s) for s in scenes.SHAPES]
        color = [-100] + [one(" " + c) for c in scenes.COLOR_NAMES]
        char = [-100] + [one(c) for c in vocab.chars[1:]]
        self.missing = sum(t == -100 for t in char[1:])
        # label_rows: the softmax over the label words' rows of the head only (a few hundred of 151,680): the
        # second run spent most of a step on the full logits of ≈ 3,700 image positions
        self.rows = None
        if label_rows:
            ids = sorted({t for tab in (shape, color, char) for t in tab if t != -100})
            index = {t: i for i, t in enumerate(ids)}
            shape, color, char = ([index.get(t, -100) for t in tab] for tab in (shape, color, char))
            self.rows = torch.tensor(ids, device=dev)
        self.tables = [torch.tensor(t, device=dev) for t in (shape, color, char)]

    def loss(self, hidden, batch, lm_head, cells):
        """Mean cross-entropy over the named (patch, aspect) pairs of every sample's base tile."""
        dev = hidden.device
        h = base_tile_hidden(hidden, batch, cells)                                # [B, cells, width]
        first = torch.cumsum(batch["tiles"], 0) - batch["tiles"]                  # each sample's base tile
        lab = batch["aux"].to(dev)[first.to(dev)].reshape(len(first), cells, 3)   # [B, cells, 3]
        tgt = torch.stack([t[lab[..., a]] for a, t in enumerate(self.tables)], -1)  # [B, cells, 3]
        keep = (tgt != -100).any(-1)
        if not keep.any():
            return hidden.sum() * 0.0
        if self.rows is None:
            logits = lm_head(h[keep]).float()                                     # [P, vocab]
        else:
            logits = (h[keep] @ lm_head.weight[self.rows].T).float()              # [P, label words]
        t = tgt[keep]                                                             # [P, 3]
        return sum(F.cross_entropy(logits, t[:, a], ignore_index=-100, reduction="sum") for a in range(3)) / (t != -100).sum()


class Spelling(torch.nn.Module):
    """The spelling loss (`--spell`): from a token's row of the tied embedding, a linear head names its
    characters, position by position (class 0 past the end). The sixth run's decoder read Korean words 15 % and
    numbers 35 % of the time where its box landed, Latin words 0.4 % (2026-12-06): a Latin word is one token
    of 37,000 ("house"), which the decoder must name from letters its tower sees, and most words are met a
    handful of times in 15 minutes. Spelled rows give the answer a way to name any word by its letters: the
    logit h·E_t is high where h carries the letters E_t spells. Over all 76,000 tokens made of the character
    head's classes (`vocab.spelled_tokens`; none is held out: a row left unspelled is a word left unread),
    `rows` of them a step; training only, nothing is exported."""

    MAX_LEN = 12

    def __init__(self, width, vocab, rows=4096):
        super().__init__()
        import vocab as vocab_words
        spelled = vocab_words.spelled_tokens(common.TOKENIZER, vocab.chars[1:], self.MAX_LEN)
        self.n_chars, self.rows = len(vocab.chars), rows
        self.head = torch.nn.Linear(width, self.MAX_LEN * self.n_chars)
        target = np.zeros((len(spelled), self.MAX_LEN), np.int64)
        for i, (_, text) in enumerate(spelled):
            target[i, :len(text)] = [vocab.char_index[c] for c in text]
        self.register_buffer("ids", torch.tensor([t for t, _ in spelled]), persistent=False)
        self.register_buffer("target", torch.from_numpy(target), persistent=False)
        order = torch.randperm(len(spelled), generator=torch.Generator().manual_seed(len(spelled)))
        self.register_buffer("order", order, persistent=False)

    def loss(self, embedding, step):
        """The cross-entropy of the head's spelling of this step's `rows` tokens: a fixed permutation in turn,
        wrapping around."""
        at = step * self.rows + torch.arange(self.rows, device=self.order.device)
        pick = self.order[at % len(self.order)]
        logits = self.head(embedding[self.ids[pick]].float()).view(-1, self.MAX_LEN, self.n_chars)
        return F.cross_entropy(logits.reshape(-1, self.n_chars), self.target[pick].reshape(-1))

    @torch.no_grad()
    def accuracy(self, embedding, n=4096):
        """The share of `n` fixed tokens (trained on like the others) spelled exactly: whether the rows spell."""
        pick = self.order[:n]
        logits = self.head(embedding[self.ids[pick]].float()).view(-1, self.MAX_LEN, self.n_chars)
        return round((logits.argmax(-1) == self.target[pick]).all(-1).float().mean().item(), 4)


def fake_q4(w):
    """`w` (n, k) as `varco convert` stores it in 4 bits (docs/FORMAT.md; crate/src/quant): groups of 32 along
    k (the last zero-padded), the scale the f16 of the largest-magnitude value over -8, codes clamp(round(w /
    d), -8, 7), ties rounded away from zero as Rust's `round` does -- with the straight-through estimator (the
    gradient passes as if unquantized)."""
    n, k = w.shape
    pad = -k % 32
    g = F.pad(w.float(), (0, pad)).reshape(n, (k + pad) // 32, 32)
    mx = g.gather(-1, g.abs().argmax(-1, keepdim=True))
    d = (mx / -8.0).half().float()
    x = g * torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    r = torch.round(x)
    r = torch.where((x - torch.trunc(x)).abs() == 0.5, torch.trunc(x) + torch.sign(x), r)
    q = (torch.clamp(r, -8, 7) * d).reshape(n, k + pad)[:, :k]
    return w + (q.to(w.dtype) - w).detach()


class QAT:
    """Quantization-aware training (`--qat-from P`): from progress P on, the decoder computes with the weights
    `varco convert --lm-head q4` will store -- each layer's q/k/v and gate/up with their RMSNorm's weight folded
    into their columns before quantizing (loader/plan.rs: the norms then normalise without it), o/down as
    they are, the tied embedding (lookup and head) in 4 bits -- so that training moves the weights where 4 bits
    cost little. The sixth run lost 10.2 points of grounding F1 to the decoder's 4-bit layers (2026-12-06).
    The modules' forwards are replaced on the instance: the weights and the checkpoint keep their names and
    stay unquantized (the converter quantizes them as this does; `qat_check.py` checks it)."""

    def __init__(self):
        self.on = False
        self.caches = []

    def stale(self):
        """The weights changed (an optimizer step): what `_quantized` kept is stale."""
        for c in self.caches:
            c.clear()

    def _quantized(self, w_of):
        """fake_q4 of `w_of()`; outside autograd (the probes, generation: a token a step, each through the
        embedding and the head) made once and kept until `stale`."""
        cache = {}
        self.caches.append(cache)

        def get():
            if torch.is_grad_enabled():
                return fake_q4(w_of())
            if "w" not in cache:
                cache["w"] = fake_q4(w_of())
            return cache["w"]
        return get

    @staticmethod
    def _unweighted(norm):
        def forward(x):
            h = x.float()
            return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)).to(x.dtype)
        norm.forward = forward

    def _linear(self, lin, norm=None):
        w = self._quantized(lambda: lin.weight if norm is None else lin.weight * norm.weight[None, :])
        lin.forward = lambda x: F.linear(x, w(), lin.bias)

    def apply(self, model):
        lm = model.model.language_model
        for layer in lm.layers:
            att, mlp = layer.self_attn, layer.mlp
            for lin in (att.q_proj, att.k_proj, att.v_proj):
                self._linear(lin, layer.input_layernorm)
            for lin in (mlp.gate_proj, mlp.up_proj):
                self._linear(lin, layer.post_attention_layernorm)
            self._unweighted(layer.input_layernorm)
            self._unweighted(layer.post_attention_layernorm)
            self._linear(att.o_proj)
            self._linear(mlp.down_proj)
        emb = lm.embed_tokens
        table = self._quantized(lambda: emb.weight)
        emb.forward = lambda ids: F.embedding(ids, table(), emb.padding_idx)
        self._linear(model.lm_head)        # tied: the same rows, the same 4 bits
        self.on = True


class PatchWhere(torch.nn.Module):
    """Where each base-tile image token lies, from the decoder's last hidden state there: two linear heads name
    the tenth of the image its patch's column and row fall in. The second run's answers named the objects a
    scene holds but put their boxes in the wrong places: an image token's place reached the decoder only as
    its 1-D position in the sequence. Training only, like AuxHeads (`--patch-where`)."""

    def __init__(self, width):
        super().__init__()
        self.x = torch.nn.Linear(width, 10)
        self.y = torch.nn.Linear(width, 10)

    def loss(self, hidden, batch, cells):
        h = base_tile_hidden(hidden, batch, cells)
        side = math.isqrt(cells)
        cell = torch.arange(cells, device=hidden.device)
        tx = (cell % side * 10 // side).repeat(len(h))
        ty = (cell // side * 10 // side).repeat(len(h))
        h = h.reshape(-1, h.shape[-1]).float()
        return F.cross_entropy(self.x(h), tx) + F.cross_entropy(self.y(h), ty)


class AttendWhere:
    """Attention supervision at the answer positions: in the chosen decoder layers, the chosen heads of the query
    that predicts an answer token about a place (a box's digits, an object's name, a word's characters --
    `common.char_links`) must put their attention on the image tokens that lie there: the loss is
    -log(the head's attention mass on those tokens). The second and third runs' decoders knew *what* a scene
    holds and, at each image token, *where* it lies (PatchWhere's loss 0.003), yet put every box in the wrong
    place: no answer position had learnt to find the object's tokens. This points them there; reading the
    place off the found tokens is left to the answers' own loss. Training only: nothing is added to the model.

    The supervised heads are computed a second time, for the answer rows only, beside the fused attention that
    produces the output (which stays PyTorch's SDPA)."""

    NAME = "varco_attend"

    def __init__(self, layers, heads, cells):
        self.layers, self.heads = set(layers), list(heads)
        self.margin = 0.5 / cells     # half a base-tile patch: a box of any size holds a base patch's centre
        self.batch = None             # (query positions [B, R], target, allowed [B, R, S], valid rows [B, R])
        self.losses, self.mass = [], []

    def register(self, model):
        from transformers import AttentionInterface
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
        self.sdpa = sdpa_attention_forward
        AttentionInterface.register(self.NAME, self.attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(self.NAME, sdpa_mask)
        try:
            model.set_attn_implementation({"text_config": self.NAME})
        except (AttributeError, TypeError, ValueError):   # transformers without per-sub-config switching
            for cfg in {id(c): c for c in (model.config.text_config, model.model.language_model.config)}.values():
                cfg._attn_implementation = self.NAME

    def prepare(self, batch, dev):
        """The rows' target and allowed keys for this batch; None to switch the supervision off (the probe)."""
        if batch is None:
            self.batch = None
            return
        q = batch["att_q"].to(dev)                                   # [B, R]
        boxes = batch["att_boxes"].to(dev)                           # [B, R, K, 4]
        pl = batch["places"].to(dev)                                 # [B, S, 2]
        x, y = pl[:, None, :, 0], pl[:, None, :, 1]                  # [B, 1, S]
        m = self.margin
        target = torch.zeros(q.shape + (pl.shape[1],), dtype=torch.bool, device=dev)
        for k in range(boxes.shape[2]):
            b = boxes[:, :, k, :, None]                              # [B, R, 4, 1]; NaN: no box
            target |= (x >= b[:, :, 0] - m) & (x <= b[:, :, 2] + m) & (y >= b[:, :, 1] - m) & (y <= b[:, :, 3] + m)
        keys = torch.arange(pl.shape[1], device=dev)
        allowed = keys[None, None] <= q[..., None]                   # causal: keys up to the query
        target &= allowed
        valid = (q >= 0) & target.any(-1)
        self.batch = (q.clamp(min=0), target, allowed, valid)
        self.losses, self.mass = [], []

    def attention(self, module, query, key, value, attention_mask, **kw):
        out = self.sdpa(module, query, key, value, attention_mask, **kw)
        if self.batch is None or getattr(module, "layer_idx", None) not in self.layers:
            return out
        q_pos, target, allowed, valid = self.batch
        scaling = kw.get("scaling") or module.scaling
        group = query.shape[1] // key.shape[1]
        for h in self.heads:
            qh = query[:, h].gather(1, q_pos[..., None].expand(-1, -1, query.shape[-1]))    # [B, R, D]
            logits = (qh @ key[:, h // group].transpose(1, 2)).float() * scaling          # [B, R, S]
            hit = logits.masked_fill(~target, float("-inf")).logsumexp(-1)
            every = logits.masked_fill(~allowed, float("-inf")).logsumexp(-1)
            # masked, not indexed, and no branch on the rows: the same graph every step under --compile
            # (a row without target has hit -inf; where() keeps its gradient out, masked_fill's zeroes its NaN)
            ll = torch.where(valid, hit - every, 0.0)
            n = valid.sum().clamp(min=1)
            self.losses.append(-ll.sum() / n)
            self.mass.append((ll.detach().exp() * valid).sum() / n)
        return out

    def loss(self):
        """(the loss, the mean attention mass on the targets: a tensor, read only when logged)."""
        if not self.losses:
            return None
        return sum(self.losses) / len(self.losses), sum(self.mass) / len(self.mass)


def lr_at(progress, base, warm=0.03):
    if progress < warm:
        return base * progress / warm
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warm) / (1 - warm)))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="checkpoint folder (train.pt, log.jsonl, shape.json)")
    ap.add_argument("--shape", help="a JSON file with the model's sizes (default: common.DEFAULT_SHAPE)")
    ap.add_argument("--seed", type=int, default=20261205)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--aux-weight", type=float, default=0.5)
    ap.add_argument("--minutes", type=float, default=9.0, help="this run's time limit (checkpoint, then stop)")
    ap.add_argument("--budget-minutes", type=float, default=15.0, help="the whole recipe's training time")
    ap.add_argument("--steps", type=int, help="schedule by steps instead of time (fully deterministic)")
    # The fourth run (H100, replay 3) took 924 fresh batches of 48 -- 44,000 samples -- in 11.5 minutes: with
    # 150,000 its scenes never passed 30 % of the curriculum, while the held-out scenes are its end. At 45,000
    # the end comes at about three quarters of a 15-minute run at that pace.
    ap.add_argument("--curriculum-samples", type=int, default=45_000,
                    help="fresh samples until the curriculum reaches its end (the held-out scenes' difficulty)")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--save-every", type=float, default=120.0, help="seconds between checkpoints")
    ap.add_argument("--probe-every", type=float, default=45.0,
                    help="seconds of training between probes of whether the answers use the image (0: none)")
    ap.add_argument("--mix", help="task weights, e.g. describe=1,refer=1 (default: MIX)")
    ap.add_argument("--spec", help="scene overrides as JSON, e.g. '{\"max_items\": 1}'")
    ap.add_argument("--max-turns", type=int, default=3)
    ap.add_argument("--patch-words", type=float, default=0.5,
                    help="weight of the decoder's per-patch word loss (PatchWords; 0: off)")
    ap.add_argument("--patch-words-rows", choices=["all", "labels"], default="all",
                    help="PatchWords' softmax over every row of the head (the second run) or the label words' only")
    ap.add_argument("--patch-where", type=float, default=0.0,
                    help="weight of PatchWhere (the image tokens' column and row tenths; 0: off, as in the second run)")
    ap.add_argument("--attend", type=float, default=1.0,
                    help="weight of AttendWhere (answer tokens' attention on the places they are about; 0: off, "
                         "as in the first three runs)")
    ap.add_argument("--attend-layers", default="2,3,4,5", help="decoder layers whose heads AttendWhere supervises")
    ap.add_argument("--attend-heads", default="0", help="the supervised heads of those layers")
    ap.add_argument("--attend-edges", type=int, default=1,
                    help="1: a box's coordinates attend to their own edge of the object; 0: to the whole object")
    ap.add_argument("--replay", type=int, default=3,
                    help="steps per fresh batch: the others retrain one of the last --replay-keep batches, "
                         "drawn by the seed (the GPU outruns the scene workers; 1: every batch fresh)")
    ap.add_argument("--replay-keep", type=int, default=16)
    ap.add_argument("--char-weight", type=float, default=1.0,
                    help="the auxiliary character head's weight beside the shape and colour heads' (the fifth run's "
                         "tower named the character at a quarter of the patches that show one)")
    ap.add_argument("--char-tiles", choices=["all", "high"], default="all",
                    help="the patches the character head learns on: every tile's, or (high) not the base tile's")
    ap.add_argument("--pages", type=int, default=0,
                    help="text pages a batch (common.text_page) through the vision tower for the character head "
                         "alone, beside the scenes: a page holds about 2.5 times the characters of a scene's high tiles")
    ap.add_argument("--spell", type=float, default=0.0,
                    help="weight of the spelling loss (Spelling): the tied embedding's rows name their tokens' characters")
    ap.add_argument("--qat-from", type=float,
                    help="quantization-aware training (QAT) from this progress (0..1 of the budget) on")
    ap.add_argument("--score-every", type=float,
                    help="seconds of training between free-running scores (FreeRun; 0, the default: none)")
    ap.add_argument("--score-scenes", type=int, help="the held-out scenes FreeRun answers (32)")
    ap.add_argument("--sdp", choices=["any", "no-cudnn"],
                    help="the attention kernels PyTorch may pick from: any, or all but cuDNN's (flash where there is "
                         "no mask, memory-efficient where there is): the fifth run's profile found cuDNN's attention "
                         "spending ≈ 2 ms of host time a call, planning for each new sequence length (default: any)")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the vision tower and the decoder (dynamic shapes): fewer, fused kernels")
    ap.add_argument("--profile", type=int, default=0,
                    help="profile this many steps after 20 of warm-up with torch.profiler, print where the time "
                         "goes, and stop (no checkpoint)")
    a = ap.parse_args()

    os.makedirs(a.out, exist_ok=True)
    ckpt_path = os.path.join(a.out, "train.pt")
    shape = common.load_shape(a.shape) if a.shape else common.DEFAULT_SHAPE
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False) if a.resume and os.path.exists(ckpt_path) else None
    if state:
        shape, a.seed = state["shape"], state["seed"]
        a.replay = state.get("replay", 1)
        # the recipe's options come from the checkpoint too: a resumed run that forgot `--patch-where` or
        # `--patch-words-rows` would otherwise change the recipe half way without a word
        options = dict(state.get("options", {}))
        if options and "attend" not in options:
            options["attend"] = 0.0    # a checkpoint from before AttendWhere trained without it
        if options:
            # from before the character head's options: it trained as their defaults do
            options.setdefault("char_weight", 1.0)
            options.setdefault("char_tiles", "all")
            options.setdefault("pages", 0)
            options.setdefault("spell", 0.0)
            options.setdefault("qat_from", None)
        for name, value in options.items():
            if getattr(a, name) != value:
                print(f"resume: --{name.replace('_', '-')} {value} (from the checkpoint; given {getattr(a, name)})", flush=True)
            setattr(a, name, value)
    for name, default in RUN_OPTIONS.items():
        if getattr(a, name) is None:
            setattr(a, name, (state or {}).get("run_options", {}).get(name, default))
    mix = {k: float(v) for k, v in (kv.split("=") for kv in a.mix.split(","))} if a.mix else MIX
    spec = json.loads(a.spec) if a.spec else {}
    if "sizes" in spec:
        spec["sizes"] = tuple(tuple(x) for x in spec["sizes"])
    with open(os.path.join(a.out, "shape.json"), "w") as f:
        json.dump(shape, f, indent=1)

    torch.manual_seed(a.seed)
    torch.set_float32_matmul_precision("high")
    if a.sdp == "no-cudnn":
        torch.backends.cuda.enable_cudnn_sdp(False)
    # Batches cross from the workers through shared memory (≈ 50 MB of 8-bit tiles each): where /dev/shm is
    # small, fewer batches wait there (one a worker), and a warning says why the loader may fail
    import shutil
    shm = shutil.disk_usage("/dev/shm").free if os.path.isdir("/dev/shm") else 0
    prefetch = 4 if shm > 8 << 30 else 1
    if shm < (a.workers + 1) * 64 << 20:
        print(f"warning: /dev/shm has {shm >> 20} MiB free, {a.workers} workers need about "
              f"{(a.workers + 1) * 64} MiB: use fewer --workers if the loader dies", flush=True)
    from transformers import LlavaOnevisionForConditionalGeneration
    dev = torch.device(a.device)
    model = LlavaOnevisionForConditionalGeneration(common.build_config(shape)).to(dev)
    vocab = scenes.Vocab(common.TOKENIZER, shape["hangul"])
    heads = AuxHeads(shape["vision"]["hidden"], len(vocab.chars)).to(dev)
    where = PatchWhere(shape["text"]["hidden"]).to(dev)
    spelling = Spelling(shape["text"]["hidden"], vocab).to(dev) if a.spell > 0 else None
    params = list(model.parameters()) + list(heads.parameters()) + (list(where.parameters()) if a.patch_where > 0 else []) \
        + (list(spelling.parameters()) if spelling else [])
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.98), eps=1e-8, fused=dev.type == "cuda")
    step, spent = 0, 0.0
    if state:
        model.load_state_dict(state["model"])
        heads.load_state_dict(state["heads"])
        if "where" in state:
            where.load_state_dict(state["where"])
        if spelling and state.get("spelling"):
            spelling.load_state_dict(state["spelling"])
        opt.load_state_dict(state["opt"])
        step, spent = state["step"], state["spent"]
        print(f"resumed at step {step}, {spent / 60:.1f} min trained", flush=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f} M parameters ({shape})", flush=True)

    attend = None
    if a.attend > 0:
        layers = [int(v) for v in a.attend_layers.split(",")]
        heads_ = [int(v) for v in a.attend_heads.split(",")]
        if not all(0 <= v < shape["text"]["layers"] for v in layers) or not all(0 <= v < shape["text"]["heads"] for v in heads_):
            sys.exit(f"--attend-layers {a.attend_layers} / --attend-heads {a.attend_heads}: the decoder has "
                     f"{shape['text']['layers']} layers of {shape['text']['heads']} heads")
        attend = AttendWhere(layers, heads_, shape["tile"] // shape["patch"])
        attend.register(model)
    if a.compile:
        # Module.compile works in place, so the checkpoint keeps the plain model's names; dynamic, since the
        # sequence length and the number of tiles vary from batch to batch. Some recompiles remain (the probe's
        # no_grad, sizes of 1, the backends' size thresholds: 37 in 26 steps with probes at tiny size on the
        # CPU): room for them, where dynamo's default of 8 a frame would fall back to eager
        import torch._dynamo as dynamo
        dynamo.config.cache_size_limit = max(dynamo.config.cache_size_limit, 64)
        model.model.vision_tower.compile(dynamic=True)
        model.model.language_model.compile(dynamic=True)
    qat = QAT()
    captured = {}
    model.model.vision_tower.register_forward_hook(
        lambda mod, inp, out: captured.__setitem__("h", out.hidden_states[-1]))

    # with --replay R, step s trains fresh batch s / R (every R-th step); a resumed run continues after the
    # last fresh batch it took, and refills its replay buffer from there
    data = Batches(shape, a.seed, a.batch, -(-step // a.replay), a.curriculum_samples, mix, a.max_turns, spec,
                   bool(a.attend_edges), a.pages)
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=a.workers, pin_memory=dev.type == "cuda",
                                         prefetch_factor=prefetch if a.workers else None, persistent_workers=False)
    log = open(os.path.join(a.out, "log.jsonl"), "a")
    probing = probe_batch(shape, a.seed, min(a.batch, 32), mix=mix, spec=spec) if a.probe_every > 0 else None
    tok = common.build_processor(shape)[0]     # the tokenizer: the probe's box tokens, PatchWords' words
    tag_ids = {"box": tok.convert_tokens_to_ids(["<bbox>", "</bbox>"]),
               "read": tok.convert_tokens_to_ids(["<char>", "</char>"])}
    last_probe = spent
    free = FreeRun(shape, a.score_scenes, dev) if a.score_every > 0 else None
    last_free = spent
    run_start = time.time()
    last_save = run_start
    t_prev = time.time()
    lm_head = model.lm_head
    patch_words = PatchWords(tok, vocab, dev, a.patch_words_rows == "labels") \
        if a.patch_words > 0 else None
    if patch_words and patch_words.missing:
        print(f"patch words: {patch_words.missing} characters are not one token and go unnamed", flush=True)
    cells = (shape["tile"] // shape["patch"]) ** 2
    kept = []                                   # the last fresh batches, on the device, for --replay
    fresh_iter = iter(loader)
    waited = 0.0

    def save():
        tmp = ckpt_path + ".tmp"
        torch.save({"model": model.state_dict(), "heads": heads.state_dict(), "where": where.state_dict(),
                    "spelling": spelling.state_dict() if spelling else {}, "opt": opt.state_dict(),
                    "step": step, "spent": spent, "shape": shape, "seed": a.seed,
                    "replay": a.replay, "options": {k: getattr(a, k) for k in RECIPE_OPTIONS},
                    "run_options": {k: getattr(a, k) for k in RUN_OPTIONS}}, tmp)
        os.replace(tmp, ckpt_path)

    def score_answers():
        """FreeRun's scores now, into the log (AttendWhere off, as for the probe)."""
        if attend:
            attend.prepare(None, dev)
        t_free = time.time()
        rec = {"step": step, "min": round(spent / 60, 2), **free(model)}
        captured.pop("h", None)
        rec["free_s"] = round(time.time() - t_free, 1)
        print(json.dumps(rec), flush=True)
        log.write(json.dumps(rec) + "\n")
        log.flush()

    model.train()
    first_step = step
    while True:
        if step % a.replay == 0 or not kept:
            t_wait = time.time()
            batch = next(fresh_iter)
            waited += time.time() - t_wait
            if a.replay > 1:
                batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
                kept = (kept + [batch])[-a.replay_keep:]
        else:
            batch = kept[random.Random(a.seed * 7_919 + step).randrange(len(kept))]
        progress = step / a.steps if a.steps else spent / (a.budget_minutes * 60)
        if progress >= 1.0 or time.time() - run_start > a.minutes * 60:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(progress, a.lr)
        if a.qat_from is not None and progress >= a.qat_from and not qat.on:
            qat.apply(model)
            print(f"QAT from step {step} ({progress:.2f} of the budget)", flush=True)
        if attend:
            attend.prepare(batch, dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            hid, tgt, full = answers(model, batch, dev, full=True)
            loss_lm = F.cross_entropy(lm_head(hid).float(), tgt)
            loss_aux = heads.loss(captured.pop("h"), batch["aux"].to(dev, non_blocking=True), a.char_weight,
                                  batch["high"].to(dev, non_blocking=True) if a.char_tiles == "high" else None)
            loss = loss_lm + a.aux_weight * loss_aux
            if a.pages:
                # the tower alone, on the pages; its hook hands their hidden states over as it does the scenes'
                model.model.vision_tower(batch["page_pixels"].to(dev, non_blocking=True).float() / 127.5 - 1.0,
                                         output_hidden_states=True)
                loss_pages = heads.loss(captured.pop("h"), batch["page_aux"].to(dev, non_blocking=True), a.char_weight,
                                        only_char=True)
                loss = loss + a.aux_weight * loss_pages
            if patch_words:
                loss_pw = patch_words.loss(full, batch, lm_head, cells)
                loss = loss + a.patch_words * loss_pw
            if a.patch_where > 0:
                loss_where = where.loss(full, batch, cells)
                loss = loss + a.patch_where * loss_where
            if spelling:
                loss_spell = spelling.loss(model.get_input_embeddings().weight, step)
                loss = loss + a.spell * loss_spell
            attended = attend.loss() if attend else None
            if attended:
                loss = loss + a.attend * attended[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        qat.stale()
        step += 1
        if a.profile and step == first_step + 20:
            profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU] +
                                              ([torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else []))
            profiler.__enter__()
            t_profile = time.time()
        if a.profile and step == first_step + 20 + a.profile:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            wall = (time.time() - t_profile) / a.profile
            profiler.__exit__(None, None, None)
            by = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
            print(profiler.key_averages().table(sort_by=by, row_limit=30), flush=True)
            print(f"profile: {wall * 1000:.1f} ms a step over {a.profile} steps (batch {a.batch}, "
                  f"{int(batch['attention_mask'].sum())} tokens in the last)", flush=True)
            return
        now = time.time()
        spent += now - t_prev
        t_prev = now
        if step % 25 == 0:
            rec = {"step": step, "min": round(spent / 60, 2), "lr": round(opt.param_groups[0]["lr"], 6),
                   "curriculum": round(min(1.0, -(-step // a.replay) * a.batch / a.curriculum_samples), 3),
                   "lm": round(loss_lm.item(), 4), "aux": round(loss_aux.item(), 4), "gn": round(gn.item(), 3),
                   "tokens": int(batch["attention_mask"].sum().item()), "answer_tokens": len(tgt),
                   "waited_min": round(waited / 60, 2)}
            if patch_words:
                rec["pw"] = round(loss_pw.item(), 4)
            if a.pages:
                rec["pages"] = round(loss_pages.item(), 4)
            if spelling:
                rec["spell"] = round(loss_spell.item(), 4)
            if qat.on:
                rec["qat"] = True
            if a.patch_where > 0:
                rec["where"] = round(loss_where.item(), 4)
            if attended:
                rec["attend"], rec["attend_mass"] = round(attended[0].item(), 4), round(attended[1].item(), 4)
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()
        if probing is not None and (spent - last_probe >= a.probe_every or step == 1):
            if attend:
                attend.prepare(None, dev)
            rec = {"step": step, "min": round(spent / 60, 2), **probe(model, lm_head, probing, dev, tag_ids, heads, captured)}
            if spelling:
                rec["spelled"] = spelling.accuracy(model.get_input_embeddings().weight)
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            last_probe = spent
            t_prev = time.time()   # the probe is not training time
        if free is not None and spent - last_free >= a.score_every:
            score_answers()
            last_free = spent
            t_prev = time.time()
        if now - last_save > a.save_every:
            save()
            last_save = now
    save()
    if free is not None and last_free < spent:
        score_answers()
    print(f"stopped at step {step}, {spent / 60:.2f} min trained in all; checkpoint {ckpt_path}", flush=True)


if __name__ == "__main__":
    main()
