"""What training, export, evaluation and the fixtures share: the model's shape, the processor, the tasks.

The model is VARCO-VISION's architecture (LlavaOnevisionForConditionalGeneration: SigLIP, the mlp2x_gelu
projector, image_newline, Qwen2 with q/k/v biases) at a small size, with VARCO's real tokenizer and chat
template. Its tiles are `tile` pixels (224 by default, 16 x 16 patches of 14) instead of 384, and its anyres
grid pinpoints are the same 6 x 6 multiples of the tile that VARCO uses of 384, so that any image size works as
it does for the 14B. The embedding is tied to the LM head: at 4 bits its 151,680 rows are most of the model's
bytes, and one copy of them has to fit the demo's 16 MB.

Tasks and answers follow VARCO's formats (`../shared/docs/MODEL.md` section 4) and the prompts the engine sends
(`crate/src/answer.rs`, `prompts`): `<ocr>` answers one `<char>text</char><bbox>x1, y1, x2, y2</bbox>` line per
text in reading order; `<gro>` wraps each object in `<obj>...</obj><bbox>...</bbox>` (several boxes of one
phrase joined by `<delim>`); referring questions put `<obj>this</obj><bbox>...</bbox>` before the question.
Coordinates are fractions of the original image with two decimals (VARCO writes up to three; two locate a box
to half a percent, and shorter answers train faster).
"""
import json
import math
import os

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED = os.environ.get("VARCO_SHARED", os.path.join(REPO, "..", "shared"))
# VARCO's tokenizer: the fixtures' copy beside the checkout, or (on the training machine, where ../shared does
# not travel) the demo model's copy of the same file
TOKENIZER = os.environ.get("VARCO_TOKENIZER") or next(
    (p for p in (os.path.join(SHARED, "fixtures", "tiny-varco-a", "model-hf", "tokenizer.json"),
                 os.path.join(REPO, "web", "demo", "public", "models", "small", "tokenizer.json")) if os.path.exists(p)),
    os.path.join(SHARED, "fixtures", "tiny-varco-a", "model-hf", "tokenizer.json"))

IMAGE_TOKEN = 151675
IM_START, IM_END, ASSISTANT, NEWLINE = 151644, 151645, 77091, 198
SPECIAL = ["<gro>", "<ocr>", "<char>", "</char>", "<obj>", "</obj>", "<bbox>", "</bbox>", "<delim>"]
# The chat template of NCSOFT/VARCO-VISION-14B-HF (chat_template.json), verbatim (as ../shared/fixtures/generate.py).
CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% else %}{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{% endif %}"
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}"
    "{{ content['text'] }}{% endgeneration %}{% endfor %}{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

DEFAULT_SHAPE = {
    "tile": 224, "patch": 14,
    "vision": {"hidden": 192, "heads": 3, "intermediate": 768, "layers": 6},
    "text": {"hidden": 128, "heads": 4, "kv_heads": 2, "intermediate": 512, "layers": 6},
    "hangul": 400,
}


def pinpoints(tile):
    return [[tile * a, tile * b] for a in range(1, 7) for b in range(1, 7)]


def anyres_geometry(w, h, pins):
    """How the image processor lays a w×h image on the anyres grid: the best pinpoint (bw, bh) and the size
    (nw, nh) the image is resized to inside it, keeping its aspect (centred; the rest is padding)."""
    from transformers.image_processing_utils import select_best_resolution
    bh, bw = select_best_resolution((h, w), pins)
    sw, sh = bw / w, bh / h
    if sw < sh:
        nw, nh = bw, min(math.ceil(h * sw), bh)
    else:
        nh, nw = bh, min(math.ceil(w * sh), bw)
    return bw, bh, nw, nh


def tiles_u8(img, tile, pins):
    """The image processor's tiles as 8-bit pixels [tiles, 3, tile, tile]: the base tile (the whole image resized),
    then the anyres grid row by row (the image resized into the best pinpoint keeping its aspect, centred on
    black). The same Pillow bicubic resizes as LlavaOnevisionImageProcessorPil, without its float conversion;
    `check.py` checks that the two agree exactly."""
    import numpy as np
    from PIL import Image
    img = img.convert("RGB")
    bw, bh, nw, nh = anyres_geometry(*img.size, pins)
    canvas = Image.new("RGB", (bw, bh))
    canvas.paste(img.resize((nw, nh), Image.BICUBIC), ((bw - nw) // 2, (bh - nh) // 2))
    grid = np.asarray(canvas)
    tiles = [np.asarray(img.resize((tile, tile), Image.BICUBIC))]
    tiles += [grid[y:y + tile, x:x + tile] for y in range(0, bh, tile) for x in range(0, bw, tile)]
    return np.stack(tiles).transpose(0, 3, 1, 2)


def tile_sources(w, h, pins, tile, patch):
    """Where each patch centre of each tile (base tile, then the anyres grid row by row, as `tiles_u8` cuts them)
    comes from in a w×h image: [(rows, cols)] per tile, source pixel indices per patch row and column, -1 on
    padding."""
    import numpy as np
    bw, bh, nw, nh = anyres_geometry(w, h, pins)
    py, px = (bh - nh) // 2, (bw - nw) // 2
    c = np.arange(patch // 2, tile, patch)[: tile // patch]      # patch centres within a tile

    def src(pos, n_out, n_in):
        """Source index of output pixel `pos` when n_in pixels are resized to n_out (-1 outside)."""
        ok = (pos >= 0) & (pos < n_out)
        return np.where(ok, np.minimum(((pos + 0.5) * n_in / n_out).astype(np.int64), n_in - 1), -1)

    out = [(src(c, tile, h), src(c, tile, w))]
    for ty in range(bh // tile):
        for tx in range(bw // tile):
            out.append((src(ty * tile + c - py, nh, h), src(tx * tile + c - px, nw, w)))
    return out


def tile_labels(labels, pins, tile, patch):
    """A label map [h, w, 3] cut as `tiles_u8` cuts the image (base tile, then the anyres grid row by row), read
    at each patch's centre: [tiles, cells, cells, 3]. Padding reads as class 0."""
    import numpy as np
    h, w = labels.shape[:2]
    padded = np.concatenate([labels, np.zeros((1, w, 3), labels.dtype)], 0)
    padded = np.concatenate([padded, np.zeros((h + 1, 1, 3), labels.dtype)], 1)   # index -1 reads zeros
    return np.stack([padded[ys][:, xs] for ys, xs in tile_sources(w, h, pins, tile, patch)])


def text_page(rng, spec, vocab, tile, patch):
    """A page of text for the vision tower's character head alone (`train.py --pages`): one tile of words and
    short lines packed as densely as they fit, drawn as `spec` draws a scene's text (its fonts, rotation, noise)
    at about the scale the anyres grid shows a scene, with nothing else on it. The head learned slowly from the
    scenes alone (it named a quarter of the characters after 13.5 minutes, 2026-12-06): at the curriculum's end
    a scene's high tiles hold 25 patches on a character between them, a page 62 on its one tile (50 of each,
    measured 2026-12-06) -- some 15 times the characters for the tower's time, and 1.5 times for the drawing's.
    -> (8-bit pixels [3, tile, tile], the labels at the patch centres [cells, cells, 3] as `tile_labels` reads
    them, the page's items)."""
    import dataclasses
    import numpy as np
    import scenes
    page = dataclasses.replace(spec, min_items=16, max_items=16, text_share=1.0, min_text=0, min_shapes=0,
                               max_words=max(2, spec.max_words), sizes=((tile, tile),))
    sc = scenes.make_scene(rng, page, vocab)
    c = np.arange(patch // 2, tile, patch)[: tile // patch]
    return np.asarray(sc.image).transpose(2, 0, 1), sc.labels[c][:, c], sc.items


def tile_coords(w, h, pins, tile, patch):
    """Each patch centre's place in the image as fractions (x, y) of its width and height: [tiles, cells², 2],
    -1 on padding; in the tiles' order, as the vision tower's features before packing."""
    import numpy as np
    out = []
    for ys, xs in tile_sources(w, h, pins, tile, patch):
        fy = np.where(ys >= 0, (ys + 0.5) / h, -1.0)
        fx = np.where(xs >= 0, (xs + 0.5) / w, -1.0)
        gy, gx = np.meshgrid(fy, fx, indexing="ij")
        out.append(np.stack([gx, gy], -1).reshape(-1, 2))
    return np.stack(out).astype(np.float32)


def build_config(shape):
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig
    t, v = shape["text"], shape["vision"]
    text = Qwen2Config(vocab_size=151680, hidden_size=t["hidden"], intermediate_size=t["intermediate"],
                       num_hidden_layers=t["layers"], num_attention_heads=t["heads"],
                       num_key_value_heads=t["kv_heads"], rope_theta=1e6, rms_norm_eps=1e-6,
                       max_position_embeddings=32768, tie_word_embeddings=True, bos_token_id=151643,
                       eos_token_id=IM_END, use_sliding_window=False)
    vision = SiglipVisionConfig(hidden_size=v["hidden"], intermediate_size=v["intermediate"],
                                num_hidden_layers=v["layers"], num_attention_heads=v["heads"],
                                image_size=shape["tile"], patch_size=shape["patch"], layer_norm_eps=1e-6,
                                hidden_act="gelu_pytorch_tanh", vision_use_head=False)
    return LlavaOnevisionConfig(text_config=text, vision_config=vision, image_token_index=IMAGE_TOKEN,
                                video_token_index=151647, projector_hidden_act="gelu",
                                vision_feature_select_strategy="full", vision_feature_layer=-1,
                                vision_aspect_ratio="anyres_max_9", image_grid_pinpoints=pinpoints(shape["tile"]),
                                tie_word_embeddings=True, use_image_newline_parameter=True)


def build_processor(shape, tokenizer_json=TOKENIZER):
    from transformers import PreTrainedTokenizerFast
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import \
        LlavaOnevisionImageProcessorPil
    from transformers.models.llava_onevision.processing_llava_onevision import LlavaOnevisionProcessor
    tile = shape["tile"]
    tok = PreTrainedTokenizerFast(tokenizer_file=tokenizer_json, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  unk_token="[UNK]", bos_token=None, clean_up_tokenization_spaces=False)
    tok.add_special_tokens({"additional_special_tokens": SPECIAL})
    tok.chat_template = CHAT_TEMPLATE
    tok.image_token, tok.image_token_id = "<image>", IMAGE_TOKEN
    tok.video_token, tok.video_token_id = "<video>", 151647
    ip = LlavaOnevisionImageProcessorPil(image_mean=[0.5] * 3, image_std=[0.5] * 3,
                                         size={"height": tile, "width": tile}, image_grid_pinpoints=pinpoints(tile),
                                         do_pad=True, do_convert_rgb=True, resample=3)
    LlavaOnevisionProcessor.check_argument_for_proper_class = lambda self, name, arg: None
    cells = (tile // shape["patch"]) ** 2
    proc = LlavaOnevisionProcessor(image_processor=ip, tokenizer=tok, num_image_tokens=cells,
                                   vision_feature_select_strategy="full", chat_template=CHAT_TEMPLATE,
                                   vision_aspect_ratio="anyres_max_9", video_processor=None)
    return tok, ip, proc


# ---------------------------------------------------------------------------------------------- tasks

def coord(v):
    s = f"{min(max(v, 0.0), 1.0):.2f}".rstrip("0").rstrip(".")
    return s or "0"


def box_text(b):
    return ", ".join(coord(v) for v in b)


def has_batchim(word):
    c = word[-1]
    return "\uac00" <= c <= "\ud7a3" and (ord(c) - 0xAC00) % 28 != 0


def _plural(label):
    return label + ("es" if label.endswith("ss") else "s")


def _article(label):
    return ("an " if label[0] in "aeiou" else "a ") + label


def _groups(items, ko):
    """Shape items grouped by label, in the order they first appear left to right."""
    out = {}
    for it in sorted(items, key=lambda it: (it.box[0], it.box[1])):
        if it.kind == "shape":
            out.setdefault(it.label(ko), []).append(it)
    return out


# Answers are built as pieces (text, link): `link` is None, a list of the normalised boxes the piece is about,
# or a text item whose characters the piece spells (each character is then about its own part of the item's
# box). `joined` gives the answer; `char_links` what each of its characters is about (train.py's AttendWhere
# points the answer's tokens at those places).

def char_box(item, i, j, w, h):
    """The part of a text item's normalised box that holds its characters i..j-1."""
    x0, y0, x1, y1 = item.norm_box(w, h)
    if not item.chars:
        return (x0, y0, x1, y1)
    return (x0 + (x1 - x0) * item.chars[i][0], y0, x0 + (x1 - x0) * item.chars[j - 1][1], y1)


def joined(pieces):
    return "".join(t for t, _ in pieces)


def char_links(pieces, w, h):
    """For each character of the joined answer: the tuple of boxes it is about, or None."""
    out = []
    for text, link in pieces:
        if link is None:
            out += [None] * len(text)
        elif isinstance(link, list):
            out += [tuple(link)] * len(text)
        else:
            out += [None if c == " " else (char_box(link, k, k + 1, w, h),) for k, c in enumerate(text)]
    return out


def _coord_pieces(b, edges):
    """`box_text(b)` as pieces: with `edges`, each coordinate about its own edge of the box (a box of no width or
    no height: the strip along that edge), else the whole box about the whole object."""
    if not edges:
        return [(box_text(b), [b])]
    x0, y0, x1, y1 = b
    out = []
    for k, (v, e) in enumerate(zip(b, ((x0, y0, x0, y1), (x0, y0, x1, y0), (x1, y0, x1, y1), (x0, y1, x1, y1)))):
        out += ([(", ", None)] if k else []) + [(coord(v), [e])]
    return out


def _box_pieces(items, w, h, edges=False):
    """The items' boxes joined by <delim>, as pieces: each box about its own item, each <delim> about the box it
    announces."""
    out = []
    for k, it in enumerate(items):
        b = [it.norm_box(w, h)]
        if k:
            out.append(("<delim>", b))
        out += _coord_pieces(b[0], edges)
    return out


def ocr_pieces(items, w, h, edges=False):
    from scenes import reading_order
    out = []
    for k, it in enumerate(reading_order(items, h)):
        b = [it.norm_box(w, h)]
        if k:
            out.append(("\n", None))
        out += [("<char>", b), (it.text, it), ("</char><bbox>", b), *_coord_pieces(b[0], edges), ("</bbox>", None)]
    return out


def ocr_answer(items, w, h):
    return joined(ocr_pieces(items, w, h))


def _group_pieces(name, its, w, h, edges=False):
    every = [it.norm_box(w, h) for it in its]
    return [("<obj>", every), (name, every), ("</obj><bbox>", every), *_box_pieces(its, w, h, edges), ("</bbox>", None)]


def gro_pieces(items, w, h, ko, edges=False):
    groups = _groups(items, ko)
    if not groups:
        return [("이미지에는 물체가 없습니다." if ko else "There are no objects in the image.", None)]
    parts = []
    for label, its in groups.items():
        if ko:
            name = label if len(its) == 1 else f"{label} {len(its)}개"
        else:
            name = _article(label) if len(its) == 1 else f"{len(its)} {_plural(label)}"
        parts.append(_group_pieces(name, its, w, h, edges))
    if ko:
        out = [("이미지에는 ", None)]
        for k, part in enumerate(parts):
            out += ([(", ", None)] if k else []) + part
        return out + [("이 있습니다.", None)]
    out = [("The image shows ", None)]
    for k, part in enumerate(parts):
        if k:
            out.append((" and " if k == len(parts) - 1 else ", ", None))
        out += part
    return out + [(".", None)]


def gro_answer(items, w, h, ko):
    return joined(gro_pieces(items, w, h, ko))


def describe_pieces(items, w, h, ko):
    names = []
    for it in sorted(items, key=lambda it: (it.box[0], it.box[1])):
        b = [it.norm_box(w, h)]
        if it.kind == "shape":
            names.append([(it.label(ko) if ko else _article(it.label()), b)])
        elif ko:
            names.append([("\"", b), (it.text, it), ("\"라는 글자", b)])
        else:
            names.append([("the text \"", b), (it.text, it), ("\"", b)])
    if not names:
        return [("아무것도 없는 배경입니다." if ko else "The image shows a plain background.", None)]
    out = [] if ko else [("The image shows ", None)]
    for k, name in enumerate(names):
        if k:
            out.append((" and " if not ko and k == len(names) - 1 else ", ", None))
        out += name
    return out + [("이 있는 이미지입니다." if ko else ".", None)]


def describe_answer(items, ko, w=1, h=1):
    return joined(describe_pieces(items, w, h, ko))


def refer_pieces(item, ko, w, h):
    b = [item.norm_box(w, h)]
    if item.kind == "text":
        if ko:
            return [("\"", b), (item.text, item), ("\"라고 쓰여 있습니다.", None)]
        return [("It says \"", b), (item.text, item), ("\".", None)]
    if ko:
        return [(item.label(True), b), ("입니다.", None)]
    return [("It is ", b), (_article(item.label()), b), (".", None)]


def refer_answer(item, ko, w=1, h=1):
    return joined(refer_pieces(item, ko, w, h))


REFER_EN = ["What is this?", "What is it?", "What is in this region?"]
REFER_KO = ["은 무엇인가요?", "은 뭐야?", "은 무엇입니까?"]


def refer_prompt(box, ko, rng=None, question=None):
    q = question or (rng.choice(REFER_KO if ko else REFER_EN) if rng else (REFER_KO[0] if ko else REFER_EN[0]))
    if ko:
        return f"<obj>이 물건</obj><bbox>{box_text(box)}</bbox>{q}"
    return f"<obj>this</obj><bbox>{box_text(box)}</bbox> {q}"


def jitter_box(rng, b, w, h, amount=0.1):
    """A box as a user draws it around an object: each side off by up to `amount` of the object's size."""
    x0, y0, x1, y1 = b
    bw, bh = x1 - x0, y1 - y0
    j = lambda v, s, lim: min(max(v + rng.uniform(-amount, amount) * s, 0), lim)
    x0, x1 = sorted((j(x0, bw, w), j(x1, bw, w)))
    y0, y1 = sorted((j(y0, bh, h), j(y1, bh, h)))
    return (x0 / w, y0 / h, max(x1, x0 + 1) / w, max(y1, y0 + 1) / h)


def find_prompt(label, ko, rng):
    if ko:
        return f"<gro>\n이미지에서 {label}{'을' if has_batchim(label) else '를'} 찾아 주세요."
    return f"<gro>\nFind {rng.choice(['the ', ''])}{label}."


def find_pieces(items, label, ko, w, h, edges=False):
    its = [it for it in items if it.kind == "shape" and it.label(ko) == label]
    if not its:
        return [(f"이미지에 {label}{'은' if has_batchim(label) else '는'} 없습니다." if ko else
                 f"There is no {label} in the image.", None)]
    return _group_pieces(label, its, w, h, edges)


def find_answer(items, label, ko, w, h):
    return joined(find_pieces(items, label, ko, w, h))


def gro_prompt(ko):
    """Grounding's request, as training asks it and as the engine's `answer::prompts` writes it."""
    return "<gro>\n이미지를 자세히 설명해 주세요." if ko else "<gro>\nDescribe the image in detail."


def sample_turn(rng, scene, mix, edges=False):
    """One question about the scene, the task drawn from `mix` (task name -> weight): (prompt, the answer's
    pieces; with `edges`, a box's coordinates each about its own edge)."""
    w, h = scene.image.size
    items = scene.items
    tasks, weights = zip(*mix.items())
    task = rng.choices(tasks, weights)[0]
    ko = rng.random() < 0.5
    if task == "ocr":
        return "<ocr>", ocr_pieces(items, w, h, edges)
    if task == "gro":
        return gro_prompt(ko), gro_pieces(items, w, h, ko, edges)
    if task == "describe":
        return ("이 이미지를 설명해 주세요." if ko else "Describe this image."), describe_pieces(items, w, h, ko)
    if task == "find":
        from scenes import COLOR_NAMES, SHAPES, Item
        shapes = [it for it in items if it.kind == "shape"]
        it = rng.choice(shapes) if shapes and rng.random() < 0.8 else \
            Item("shape", shape=rng.choice(SHAPES), color=rng.choice(COLOR_NAMES))
        label = it.label(ko)
        return find_prompt(label, ko, rng), find_pieces(items, label, ko, w, h, edges)
    if task == "refer":
        if not items:
            return "<ocr>", []
        it = rng.choice(items)
        return refer_prompt(jitter_box(rng, it.box, w, h), ko, rng), refer_pieces(it, ko, w, h)
    raise ValueError(task)


def conversation(turns):
    """Chat messages: the image in the first user message, then the turns."""
    msgs = []
    for i, (q, a) in enumerate(turns):
        content = ([{"type": "image"}] if i == 0 else []) + [{"type": "text", "text": q}]
        msgs.append({"role": "user", "content": content})
        if a is not None:
            msgs.append({"role": "assistant", "content": [{"type": "text", "text": a}]})
    return msgs


def expand_image(proc, ids, size_wh):
    """Token ids with the one <image> id repeated as often as the image has features (as the processor does)."""
    w, h = size_wh
    tile = proc.image_processor.size["height"]
    n = proc._get_number_of_features(h, w, tile, tile)
    i = ids.index(IMAGE_TOKEN)
    return ids[:i] + [IMAGE_TOKEN] * n + ids[i + 1:]


def answer_mask(ids):
    """1 where a token is part of an assistant answer (its text and the closing <|im_end|>), else 0."""
    mask = [0] * len(ids)
    i = 0
    while i + 2 < len(ids):
        if ids[i] == IM_START and ids[i + 1] == ASSISTANT and ids[i + 2] == NEWLINE:
            j = i + 3
            while j < len(ids) and ids[j] != IM_END:
                mask[j] = 1
                j += 1
            if j < len(ids):
                mask[j] = 1
            i = j
        i += 1
    return mask


def load_shape(path):
    with open(path) as f:
        return json.load(f)
