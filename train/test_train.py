"""Tests of the training data and the scorer that need only Pillow and NumPy (CI runs them; the parts that
need torch and transformers are checked where they run, by `train/check.py` on the training machine).

    python3 -m unittest discover -s train -p 'test_*.py'
"""
import json
import os
import random
import re
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import scenes  # noqa: E402
import score  # noqa: E402

VOCAB = scenes.Vocab(common.TOKENIZER, common.DEFAULT_SHAPE["hangul"])


def scene(seed, **kw):
    spec = scenes.SceneSpec(min_items=4, max_items=7, min_text=2, min_shapes=2, **kw)
    return scenes.make_scene(random.Random(seed), spec, VOCAB)


def truth_of(i, sc, target=0, ko=False):
    w, h = sc.image.size
    return {"scene": i, "w": w, "h": h, "refer_target": target, "refer_ko": ko,
            "items": [{"kind": it.kind, "text": it.text, "box": list(it.box), "label_en": it.label(False),
                       "label_ko": it.label(True)} for it in sc.items]}


class Scenes(unittest.TestCase):
    def test_same_seed_same_scene(self):
        a, b = scene(11), scene(11)
        self.assertEqual(a.image.tobytes(), b.image.tobytes())
        self.assertEqual([it.box for it in a.items], [it.box for it in b.items])
        self.assertNotEqual(a.image.tobytes(), scene(12).image.tobytes())

    def test_boxes_are_inside_and_apart(self):
        for seed in range(30):
            sc = scene(seed)
            w, h = sc.image.size
            for i, it in enumerate(sc.items):
                x0, y0, x1, y1 = it.box
                self.assertTrue(0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (seed, it))
                for other in sc.items[i + 1:]:
                    a, b = it.box, other.box
                    self.assertTrue(a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (seed, it, other))

    def test_labels_lie_inside_their_items_boxes(self):
        for seed in range(10):
            sc = scene(seed)
            shape_px = sc.labels[..., 0] > 0
            char_px = sc.labels[..., 2] > 0
            inside_shape = np.zeros_like(shape_px)
            inside_text = np.zeros_like(char_px)
            for it in sc.items:
                x0, y0, x1, y1 = it.box
                (inside_shape if it.kind == "shape" else inside_text)[y0:y1, x0:x1] = True
            self.assertFalse((shape_px & ~inside_shape).any(), seed)
            self.assertFalse((char_px & ~inside_text).any(), seed)
            for it in sc.items:
                x0, y0, x1, y1 = it.box
                if it.kind == "shape":
                    cls = sc.labels[y0:y1, x0:x1, 0]
                    self.assertIn(1 + scenes.SHAPES.index(it.shape), set(cls.flatten()), (seed, it))
                else:
                    chars = set(sc.labels[y0:y1, x0:x1, 2].flatten()) - {0}
                    want = {VOCAB.char_index[c] for c in it.text if c != " "}
                    self.assertTrue(chars <= want | {0} and chars, (seed, it, chars, want))

    def test_text_is_drawn_where_its_box_says(self):
        """The box is tight around the ink: the text's box holds pixels that differ from its surroundings."""
        sc = scene(3, noise=0.0)
        arr = np.asarray(sc.image, np.float32)
        for it in sc.items:
            x0, y0, x1, y1 = it.box
            self.assertGreater(arr[y0:y1, x0:x1].std(), 5.0, it)

    def test_korean_words_use_the_inventory(self):
        inv = set(VOCAB.syllables)
        rng = random.Random(5)
        for _ in range(300):
            w = VOCAB.word(rng, True)
            self.assertTrue(all(c in inv or c.isdigit() for c in w), w)


class Pages(unittest.TestCase):
    """`common.text_page`: the character head's extra tiles (`train.py --pages`)."""

    def page(self, seed, progress=1.0):
        return common.text_page(random.Random(seed), scenes.curriculum(progress), VOCAB, 224, 14)

    def test_same_seed_same_page(self):
        a, b = self.page(4), self.page(4)
        self.assertEqual(a[0].tobytes(), b[0].tobytes())
        self.assertTrue(np.array_equal(a[1], b[1]))
        self.assertNotEqual(a[0].tobytes(), self.page(5)[0].tobytes())
        self.assertEqual(a[0].shape, (3, 224, 224))
        self.assertEqual(a[1].shape, (16, 16, 3))

    def test_each_label_is_a_character_of_the_text_whose_box_holds_the_patch(self):
        """Read at the patch centres (x = 7 + 14 col, y = 7 + 14 row): a labelled patch lies in the box of a text
        that has that character; only characters, no shapes or colours."""
        total = 0
        for seed in range(10):
            _, lab, items = self.page(seed)
            self.assertTrue(items and all(it.kind == "text" for it in items))
            self.assertFalse(lab[..., :2].any())
            for row, col in zip(*np.nonzero(lab[..., 2])):
                ch = VOCAB.chars[lab[row, col, 2]]
                x, y = 7 + 14 * col, 7 + 14 * row
                self.assertTrue(any(ch in it.text and it.box[0] <= x < it.box[2] and it.box[1] <= y < it.box[3]
                                    for it in items), (seed, row, col, ch))
                total += 1
        # dense: a scene's high tiles held 25 such patches between them at the curriculum's end
        self.assertGreater(total / 10, 40)


class Spelled(unittest.TestCase):
    """`vocab.spelled_tokens`: what the spelling loss (`train.py --spell`) spells."""

    def test_words_with_and_without_their_space_and_nothing_else(self):
        import vocab
        with open(common.TOKENIZER, encoding="utf-8") as f:
            ids = json.load(f)["model"]["vocab"]
        spelled = dict(vocab.spelled_tokens(common.TOKENIZER, VOCAB.chars[1:], 12))
        self.assertEqual(spelled[ids["house"]], "house")
        self.assertEqual(spelled[ids["Ġhouse"]], "house")      # GPT-2's byte for the space
        self.assertEqual(spelled[ids["HO"]], "HO")
        for tok in ("!", "ĠĠ", "<|im_end|>", "ĠtheĠ"):
            self.assertNotIn(ids.get(tok, -1), spelled)
        allowed = set(VOCAB.chars[1:])
        self.assertTrue(all(1 <= len(t) <= 12 and set(t) <= allowed for t in spelled.values()))
        korean = [t for t in spelled.values() if scenes.is_hangul(t[0])]
        self.assertGreater(len(korean), 1000)

class Paths(unittest.TestCase):
    def test_tokenizer_found_without_the_shared_folder(self):
        """On the training machine ../shared does not travel: the tokenizer comes from the demo's model."""
        import subprocess
        env = {k: v for k, v in os.environ.items() if k != "VARCO_TOKENIZER"}
        env["VARCO_SHARED"] = "/nonexistent"
        out = subprocess.run([sys.executable, "-c", "import common, os; print(os.path.exists(common.TOKENIZER))"],
                             cwd=os.path.dirname(os.path.abspath(__file__)), env=env, capture_output=True, text=True,
                             check=True)
        self.assertEqual(out.stdout.strip(), "True")

class Answers(unittest.TestCase):
    def test_ocr_answer_is_varco_format_in_reading_order(self):
        sc = scene(7)
        w, h = sc.image.size
        ans = common.ocr_answer(sc.items, w, h)
        lines = ans.split("\n")
        texts = [it for it in sc.items if it.kind == "text"]
        self.assertEqual(len(lines), len(texts))
        pat = re.compile(r"^<char>(.+)</char><bbox>(0(\.\d{1,2})?|1), (0(\.\d{1,2})?|1), (0(\.\d{1,2})?|1), (0(\.\d{1,2})?|1)</bbox>$")
        tops = []
        for line in lines:
            m = pat.match(line)
            self.assertIsNotNone(m, line)
            tops.append(float(line.split("<bbox>")[1].split(",")[1]))
        self.assertEqual(sorted(m for m in (l.split("</char>")[0][6:] for l in lines)),
                         sorted(it.text for it in texts))

    def test_char_links_point_at_the_items(self):
        """Every linked character of an answer is about a place inside its item's box: a word's characters
        about successive parts of it, left to right; with `edges`, a box's coordinates about its edges."""
        sc = scene(21)
        w, h = sc.image.size
        boxes = [it.norm_box(w, h) for it in sc.items]
        inside = lambda b: any(a[0] - 1e-9 <= b[0] <= b[2] <= a[2] + 1e-9 and a[1] - 1e-9 <= b[1] <= b[3] <= a[3] + 1e-9
                               for a in boxes)
        for edges in (False, True):
            pieces = common.ocr_pieces(sc.items, w, h, edges) + common.gro_pieces(sc.items, w, h, False, edges)
            text, links = common.joined(pieces), common.char_links(pieces, w, h)
            self.assertEqual(len(text), len(links))
            linked = [ls for ls in links if ls]
            self.assertTrue(all(inside(b) for ls in linked for b in ls))
            self.assertGreater(len(linked), len(text) // 3)
            for it in sc.items:
                if it.kind != "text":
                    continue
                at = text.index(f"<char>{it.text}</char>") + len("<char>")
                xs = [links[at + k][0] for k, c in enumerate(it.text) if c != " "]
                self.assertTrue(all(a[2] <= b[0] + 1e-9 for a, b in zip(xs, xs[1:])), (it.text, xs))
                self.assertAlmostEqual(xs[0][0], it.norm_box(w, h)[0], places=6)
            # a coordinate's digits: the whole box, or the edge strip it names
            first = next(it for it in sc.items if it.kind == "text")
            b = first.norm_box(w, h)
            at = text.index(f"<char>{first.text}</char><bbox>") + len(f"<char>{first.text}</char><bbox>")
            want = [(b[0], b[1], b[0], b[3])] if edges else [b]
            self.assertEqual(list(links[at]), want)

    def test_coordinates(self):
        self.assertEqual(common.coord(0.5), "0.5")
        self.assertEqual(common.coord(0.0), "0")
        self.assertEqual(common.coord(1.0), "1")
        self.assertEqual(common.coord(0.123), "0.12")
        self.assertEqual(common.coord(1.7), "1")
        self.assertEqual(common.box_text((0.1, 0.25, 0.5, 1.0)), "0.1, 0.25, 0.5, 1")

    def test_korean_particles(self):
        self.assertIn("원을 찾아", common.find_prompt("빨간 원", True, random.Random(0)))
        self.assertIn("하트를 찾아", common.find_prompt("빨간 하트", True, random.Random(0)))

    def test_answer_mask_covers_answers_and_their_end(self):
        S, E, A, N = common.IM_START, common.IM_END, common.ASSISTANT, common.NEWLINE
        ids = [S, 872, N, 5, 6, E, N, S, A, N, 7, 8, E, N, S, 872, N, 9, E, N, S, A, N, 10, E, N]
        mask = common.answer_mask(ids)
        self.assertEqual([i for i, m in zip(ids, mask) if m], [7, 8, E, 10, E])


class Scoring(unittest.TestCase):
    def setUp(self):
        self.scenes = [scene(100 + i) for i in range(6)]
        self.truth = [truth_of(i, sc, target=i % len(sc.items), ko=i % 2 == 1) for i, sc in enumerate(self.scenes)]

    def perfect(self):
        out = []
        for i, sc in enumerate(self.scenes):
            w, h = sc.image.size
            ko = i % 2 == 1
            out.append({"id": f"{i:04d}/ocr", "text": common.ocr_answer(sc.items, w, h)})
            out.append({"id": f"{i:04d}/gro", "text": common.gro_answer(sc.items, w, h, ko)})
            out.append({"id": f"{i:04d}/refer", "text": common.refer_answer(sc.items[i % len(sc.items)], ko)})
        return out

    def test_the_truth_scores_one(self):
        s = score.score(self.truth, self.perfect())
        self.assertEqual(s["missing_answers"], 0)
        for k in ("ocr", "grounding"):
            self.assertEqual(s[k]["f1"], 1.0, s[k])
        self.assertEqual(s["referring"]["accuracy"], 1.0)

    def test_wrong_text_wrong_box_and_wrong_name_are_misses(self):
        ans = self.perfect()
        n_ocr = sum(1 for t in self.truth for it in t["items"] if it["kind"] == "text")
        # one misread word, one box moved by its own width
        line = ans[0]["text"].split("\n")
        line[0] = re.sub(r"<char>(.*?)</char>", lambda m: f"<char>{m.group(1)}x</char>", line[0])
        ans[0]["text"] = "\n".join(line)
        t3 = self.truth[3]
        it = next(it for it in t3["items"] if it["kind"] == "text")
        x0, y0, x1, y1 = it["box"]
        wrong = common.box_text(((x1) / t3["w"], y0 / t3["h"], min(x1 + (x1 - x0), t3["w"]) / t3["w"], y1 / t3["h"]))
        right = common.box_text((x0 / t3["w"], y0 / t3["h"], x1 / t3["w"], y1 / t3["h"]))
        ans[9]["text"] = ans[9]["text"].replace(right, wrong, 1)
        # a grounding answer that names the wrong colour
        ans[1]["text"] = re.sub(r"<obj>(a|an) (\w+) ", "<obj>a mauve ", ans[1]["text"], count=1)
        # a referring answer about something else
        ans[2]["text"] = "It is a mauve blob."
        s = score.score(self.truth, ans)
        self.assertEqual(s["ocr"]["hit"], n_ocr - 2)
        self.assertEqual(s["ocr"]["pred"], n_ocr)
        n_shapes = sum(1 for t in self.truth for it in t["items"] if it["kind"] == "shape")
        self.assertEqual(s["grounding"]["hit"], n_shapes - 1)
        self.assertEqual(s["referring"]["hit"], len(self.truth) - 1)

    def test_a_repeated_prediction_counts_once(self):
        ans = self.perfect()
        ans[0]["text"] = ans[0]["text"] + "\n" + ans[0]["text"]
        s = score.score(self.truth, ans)
        self.assertEqual(s["ocr"]["hit"], s["ocr"]["truth"])
        self.assertLess(s["ocr"]["precision"], 1.0)

    def test_phrase_forms_name_the_shape(self):
        for p, want in [("a red circle", "red circle"), ("2 red circles", "red circle"), ("an orange star", "orange star"),
                        ("3 blue crosses", "blue cross"), ("a gray cross", "gray cross"), ("빨간 원 2개", "빨간 원"),
                        ("The white square", "white square")]:
            self.assertEqual(score.shape_name(p), want)

    def test_missing_answers_are_counted(self):
        s = score.score(self.truth, self.perfect()[3:])
        self.assertEqual(s["missing_answers"], 3)
        self.assertLess(s["ocr"]["recall"], 1.0)


if __name__ == "__main__":
    unittest.main()
