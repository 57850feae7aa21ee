#!/usr/bin/env python3
"""Phonemizer fixtures: piper-tts's own phonemizer vs the Debian espeak-ng 1.51 loop.

Writes tests/fixtures/phonemes/sentences.json. For every text of TEXTS it records

* `piper`: piper-tts 1.8.0's `EspeakPhonemizer` (its bundled espeak-ng "1.52.0.1" calling
  `espeak_TextToPhonemesWithTerminator`), one IPA string per sentence (Piper's NFD code
  points joined back together);
* `debian`: the same rules on the system's stock espeak-ng 1.51 (`espeak_TextToPhonemes` in a
  loop, through ctypes), which has no `...WithTerminator`: each clause's terminator is recovered
  from the text the call consumed (the rule in `terminator` below, which
  runtime/src/tts/phonemize.rs implements too);
* `nexus`: what runtime/src/tts/phonemize.rs must return: the Debian sentences without those
  that hold no phoneme, or null (NothingToSay) for text without a letter or digit;
* `piper_ids` / `debian_ids`: per sentence, the ids from piper's own `phonemes_to_ids` with the
  joe voice's `phoneme_id_map`, plus the phonemes missing from the map (`*_missing`).

The joe voice's `phoneme_id_map` is copied into the fixture so the id test needs no model.
Piper is GPL and only a fixture generator here; the runtime never runs Python.

Usage: python3 scripts/voice/phonemes.py [--voice-json models/en_US-joe-medium.onnx.json]
                                         [--out tests/fixtures/phonemes/sentences.json]
"""

import argparse
import ctypes
import json
import os
import re
import tempfile
import unicodedata

import piper
from piper.phoneme_ids import phonemes_to_ids
from piper.phonemize_espeak import EspeakPhonemizer

LIBESPEAK = "/lib/x86_64-linux-gnu/libespeak-ng.so.1"
ESPEAK_VOICE = "en-us"
AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_INITIALIZE_DONT_EXIT = 0x8000
ESPEAK_CHARS_AUTO = 0
ESPEAK_PHONEMES_IPA = 0x02

LONG = (
    "this sentence has no punctuation at all and it just keeps going on and on with more and more "
    "words so that espeak has to cut it somewhere on its own because a clause cannot grow forever "
    "and we want to see where it breaks and whether the pieces are glued back together"
)

TEXTS = [
    "Hello world.",
    "Hello world. How are you today? I am fine, thanks!",
    "The quick brown fox jumped over the lazy dog near the river bank.",
    "Dr. Smith met Mr. Jones at 10:30 a.m. on Jan. 5th, 2024.",
    "Use e.g. a comma, i.e. a pause; or a colon: like this.",
    'She said, "I\'ll be there." Then she left.',
    'He said "no."',
    "Wait... what?",
    "ones... Wow!?",
    "Really?! No way!?",
    "Well\u2026 I don't know.",
    "It was cold \u2013 very cold \u2014 and dark.",
    "First paragraph.\n\nSecond paragraph without a full stop\n\nThird one.",
    "A single\nline break does not end a sentence.",
    "He came back (twice). Then (again) left.",
    "The price is $4.99, or about 4 euros.",
    "Call 555-1234 or 1-800-FLOWERS now!",
    "In 1984, 3.14159 was pi and 1/2 was a half.",
    "The FBI and NASA are US agencies.",
    "It's the end of the world as we know it.",
    "Four score and seven years ago.",
    "Numbers: one, two, three; four, five.",
    "What time is it? It's 7 o'clock!",
    "Hello world\u3002How are you\u3002",
    "\u4f60\u597d\u3002\u4e16\u754c\u3002",
    "I love it \U0001F642 so much.",
    "\U0001F642",
    "...",
    "!!!",
    "",
    "   \n\t ",
    "Mrs. Brown's caf\u00e9 serves cr\u00e8me br\u00fbl\u00e9e.",
    "\u00dcn\u00efc\u00f6d\u00e9 fa\u00e7ade na\u00efve r\u00e9sum\u00e9.",
    "The year 2025 was the 21st century's 25th.",
    "Yes. No. Maybe.",
    "'Single quotes' and `backticks` and [brackets] and {braces}.",
    "A sentence without any terminator",
    "Temperature: -5\u00b0C, 23% humidity & 10 km/h wind.",
    "Bonjour is French, and \u041f\u0440\u0438\u0432\u0435\u0442 is Russian.",
    "Private \ue000 use and a lone \u0301 accent.",
    "Namaste is \u0928\u092e\u0938\u094d\u0924\u0947 in Hindi and hello is \uc548\ub155\ud558\uc138\uc694 in Korean.",
    "I have one.",
    "That is great \U0001F642!",
    "Hello world.. Mr.. Smith? Hi!!! There",
    "Hi! ! There. Hi .. there",
    "...\n\nHello,\n\nthere \u2014 4, 5 \u2013 6",
    LONG,
]


def is_break(c: str) -> bool:
    """Whitespace or Unicode punctuation: what may follow a clause's last word."""
    return c.isspace() or unicodedata.category(c).startswith("P")


def split_lookahead(seg: str, at_end: bool) -> tuple[str, str]:
    """(this clause's text, the look-ahead code point that belongs to the next clause).

    Each espeak_TextToPhonemes call consumes its clause, the whitespace after it and, unless it
    stopped after punctuation or whitespace, one code point of the next clause."""
    if not at_end and seg and not is_break(seg[-1]):
        return seg[:-1], seg[-1]
    return seg, ""


def terminator(clause: str, at_end: bool) -> tuple[str, bool]:
    """(terminator, ends_sentence) of a clause's text (its look-ahead already moved to the
    next clause), as espeak_TextToPhonemesWithTerminator would report it."""
    i = len(clause)
    while i > 0 and is_break(clause[i - 1]):
        i -= 1
    tail = clause[i:]
    # A blank line ends the paragraph and espeak then reports no punctuation at all; so does a
    # clause of nothing but punctuation (espeak may still read it out: "!!!" as "exclamation").
    if i == 0 or re.search(r"\n\s*\n", tail):
        return "", True
    for j, c in enumerate(tail):
        if c == "." and tail[j : j + 3] == "...":
            return "", False
        if c in ".?!":
            return c, True
        if c in ",:;":
            return c, False
        if c in "\u2013\u2014":
            return ";", False
        if c == "\u2026":
            return "", False
        if c == "\u3002":
            return "", True
    return "", at_end


class DebianPhonemizer:
    """Piper's rules on stock espeak-ng 1.51 through ctypes."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL(LIBESPEAK)
        self.lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self.lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        rate = self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None, ESPEAK_INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise RuntimeError("espeak_Initialize failed")
        if self.lib.espeak_SetVoiceByName(ESPEAK_VOICE.encode()) != 0:
            raise RuntimeError(f"espeak-ng voice {ESPEAK_VOICE!r} not found")

    def version(self) -> str:
        self.lib.espeak_Info.restype = ctypes.c_char_p
        return self.lib.espeak_Info(None).decode()

    def phonemize(self, text: str) -> list[str]:
        raw = text.encode("utf-8")
        buf = ctypes.create_string_buffer(raw)
        base = ctypes.addressof(buf)
        ptr = ctypes.c_void_p(base)
        sentences: list[str] = []
        current = ""
        lookahead = ""
        while ptr.value is not None:
            start = ptr.value - base
            ipa = self.lib.espeak_TextToPhonemes(ctypes.byref(ptr), ESPEAK_CHARS_AUTO, ESPEAK_PHONEMES_IPA)
            end = len(raw) if ptr.value is None else ptr.value - base
            clause_text, next_lookahead = split_lookahead(raw[start:end].decode("utf-8"), ptr.value is None)
            term, ends = terminator(lookahead + clause_text, ptr.value is None)
            lookahead = next_lookahead
            clause = re.sub(r"\([^)]+\)", "", (ipa or b"").decode("utf-8")) + term
            if term in (",", ":", ";"):
                clause += " "
            current += unicodedata.normalize("NFD", clause)
            if ends:
                sentences.append(current)
                current = ""
        if current:
            sentences.append(current)
        return sentences


def has_phonemes(sentence: str) -> bool:
    return any(not c.isspace() and c not in ".,:;!?" for c in sentence)


def nexus_expected(text: str, debian_sentences: list[str]):
    """What nexus's Phonemizer returns: None (NothingToSay) for text without a letter or digit,
    else the Debian sentences that hold a phoneme (None if none do)."""
    if not any(c.isalnum() for c in text):
        return None
    kept = [s for s in debian_sentences if has_phonemes(s)]
    return kept or None


def ids_of(sentences: list[str], id_map: dict) -> tuple[list[list[int]], list[str]]:
    missing = [p for s in sentences for p in s if p not in id_map]
    return [phonemes_to_ids(list(s), id_map) for s in sentences], missing


def compact_json(fixture: dict) -> str:
    """One line per top-level key and per case: small, and still readable in a diff."""
    dump = lambda v: json.dumps(v, ensure_ascii=False)
    lines = [f" {dump(k)}: {dump(v)}" for k, v in fixture.items() if k != "cases"]
    cases = ",\n".join(f"  {dump(c)}" for c in fixture["cases"])
    return "{\n" + ",\n".join(lines) + ',\n "cases": [\n' + cases + "\n ]\n}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voice-json", default="models/en_US-joe-medium.onnx.json")
    ap.add_argument("--out", default="tests/fixtures/phonemes/sentences.json")
    args = ap.parse_args()

    with open(args.voice_json, encoding="utf-8") as f:
        id_map = json.load(f)["phoneme_id_map"]
    piper_phonemizer = EspeakPhonemizer()
    debian = DebianPhonemizer()

    cases = []
    for text in TEXTS:
        piper_sentences = ["".join(s) for s in piper_phonemizer.phonemize(ESPEAK_VOICE, text)]
        debian_sentences = debian.phonemize(text)
        piper_ids, piper_missing = ids_of(piper_sentences, id_map)
        debian_ids, debian_missing = ids_of(debian_sentences, id_map)
        cases.append({
            "text": text,
            "piper": piper_sentences,
            "debian": debian_sentences,
            "nexus": nexus_expected(text, debian_sentences),
            "piper_ids": piper_ids,
            "piper_missing": piper_missing,
            "debian_ids": debian_ids,
            "debian_missing": debian_missing,
        })

    differ = [c["text"] for c in cases if c["piper"] != c["debian"]]
    fixture = {
        "generator": "scripts/voice/phonemes.py",
        "piper_tts": getattr(piper, "__version__", "1.8.0"),
        "debian_espeak_ng": debian.version(),
        "espeak_voice": ESPEAK_VOICE,
        "phoneme_id_map": id_map,
        "piper_debian_differ": differ,
        "cases": cases,
    }
    out_dir = os.path.dirname(args.out) or "."
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".sentences.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(compact_json(fixture))
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {len(cases)} texts, piper and Debian differ on {len(differ)}")
    for c in cases:
        if c["piper"] != c["debian"]:
            print(f"  {c['text']!r}\n    piper : {c['piper']}\n    debian: {c['debian']}")


if __name__ == "__main__":
    main()
