"""Words for the synthetic scenes, taken from the model's own tokenizer (no word list to download).

Qwen2.5's byte-level BPE vocabulary holds tens of thousands of whole English words and a few thousand Korean
words and word pieces. English words are its alphabetic tokens of 3-10 letters; Korean words its tokens of 2-4
Hangul syllables. The scenes also print words that are not in any list -- random syllables, letters and numbers
-- so that a model which reads well cannot have memorised the list.

Hangul has 11,172 syllables; a model of a few million parameters trained for minutes cannot learn them all.
`hangul_inventory` keeps the syllables most frequent in the vocabulary's Korean tokens (the same syllables
Korean text uses most), and every Korean word is drawn from them.
"""
import json
from collections import Counter
from functools import lru_cache


def _byte_decoder():
    """GPT-2's bytes_to_unicode table, inverted: token characters back to bytes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def is_hangul(c):
    return "\uac00" <= c <= "\ud7a3"


@lru_cache(maxsize=None)
def decoded_tokens(tokenizer_json):
    """((id, text), ...): the BPE vocabulary's tokens as text, in id order, but those that are not whole UTF-8
    (pieces of a character's bytes)."""
    with open(tokenizer_json, encoding="utf-8") as f:
        vocab = json.load(f)["model"]["vocab"]
    dec = _byte_decoder()
    out = []
    for tok, tid in sorted(vocab.items(), key=lambda kv: kv[1]):
        try:
            out.append((tid, bytes(dec[c] for c in tok).decode("utf-8")))
        except (KeyError, UnicodeDecodeError):
            continue
    return tuple(out)


@lru_cache(maxsize=None)
def vocabulary(tokenizer_json):
    """(English words, Korean words) decoded from the BPE vocabulary, in id order (deterministic)."""
    en, ko = [], []
    for _id, s in decoded_tokens(tokenizer_json):
        s = s.strip()
        if 3 <= len(s) <= 10 and s.isascii() and s.isalpha():
            en.append(s.lower())
        elif 2 <= len(s) <= 4 and all(is_hangul(c) for c in s):
            ko.append(s)
    return sorted(set(en)), sorted(set(ko))


@lru_cache(maxsize=None)
def hangul_inventory(tokenizer_json, size):
    """The `size` syllables most frequent in the vocabulary's Korean tokens, ties broken by code point."""
    _, ko = vocabulary(tokenizer_json)
    counts = Counter(c for w in ko for c in w)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return tuple(c for c, _ in ranked[:size])


@lru_cache(maxsize=None)
def korean_words(tokenizer_json, size):
    """Korean vocabulary words whose every syllable is in the inventory."""
    inv = set(hangul_inventory(tokenizer_json, size))
    _, ko = vocabulary(tokenizer_json)
    return tuple(w for w in ko if all(c in inv for c in w))


LATIN = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def char_classes(tokenizer_json, size):
    """The characters the auxiliary per-patch loss names (index 0 is "no character")."""
    return ("",) + tuple(LATIN) + tuple("-.,") + hangul_inventory(tokenizer_json, size)


@lru_cache(maxsize=None)
def spelled_tokens(tokenizer_json, chars, max_len):
    """The tokens an OCR answer can be made of, with their spelling: every vocabulary token whose text, a
    leading space dropped, is 1 to `max_len` of `chars` (the character head's classes). -> ((id, text), ...) in
    id order. A Latin word is one token ("house", " house") that the decoder must name from its letters: the
    spelling loss (`train.py --spell`) makes each such token's embedding row say its letters."""
    allowed = set(chars)
    out = []
    for tid, s in decoded_tokens(tokenizer_json):
        s = s[1:] if s.startswith(" ") else s
        if 1 <= len(s) <= max_len and all(c in allowed for c in s):
            out.append((tid, s))
    return tuple(out)
