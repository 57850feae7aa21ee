#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/corpus.json: the texts our tokenizer is checked on.

Kept as a script so the corpus stays readable (escapes spelled out) and reviewable.
Each entry: {"text": str, "parse_special": bool}.
"""
import json
import pathlib

TEXTS = [
    "", " ", "  ", "\t", "\n", "\n\n\n", "\r\n", " \r\n \r\n", "\t\t\tindented\n", "a\u00a0b", "x\u3000y",
    "Hello, world!", "hello world", " Hello World", "HELLO WORLD!!!", "Hello...world???", "¿Qué tal?",
    "I'm, you're, he's, we've, they'll, she'd, it's, don't", "I'M YOU'RE HE'S WE'VE THEY'LL SHE'D",
    "rock 'n' roll", "it’s a ‘quote’ “double”", "'s 't 're", "don''t",
    "0", "7", "12", "123", "1234", "12345", "1234567890123456789", "3.14159", "1,000,000", "-42", "+7e10",
    "2024-01-15T12:34:56Z", "v1.2.3-rc.4", "٣٤٥ ٦", "½ ² Ⅻ ①", "१२३ 四五六",
    "The quick brown fox jumps over the lazy dog.",
    "def main():\n    print(\"hi\")\n    return 0\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
    "    four spaces\n        eight spaces\n", "a  b   c    d     e", "trailing spaces   ", "   leading",
    "x\n \n  \n   y", "line1\r\nline2\rline3",
    '{"key": "value", "list": [1, 2, 3], "nested": {"a": null}}',
    "https://example.com/path?query=1&x=y#frag", "user@example.com",
    "```python\nimport os\n```", "# Title\n\n- item 1\n- item 2\n\n**bold** _it_",
    "$100 + 50% = ~€150 | <tag> ^caret^ `code`", "a->b => c <= d != e == f", "!!!???...,,,;;;",
    "日本語のテキストです。", "中文文本，包含标点符号！", "한국어 텍스트입니다", "Привет, мир!", "Ελληνικά",
    "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "สวัสดีครับ", "Tiếng Việt có dấu",
    "e\u0301 cafe\u0301 naïve résumé", "Z\u0351\u036b\u0343a\u0310l\u0352go",
    "😀", "😀😃😄", "👨‍👩‍👧‍👦 family", "🇺🇸🇯🇵 flags", "👍🏽 thumbs", "❤️", "emoji😀in😀text",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛", "∑ᵢ xᵢ² ≤ ∞ ∀ε>0", "→ ← ↑ ↓ ⇒", "©®™ §¶",
    "\u0007bell \u001bescape", "zero\u200bwidth", "soft\u00adhyphen",
    "Ðe ßtraße Øre", "ǅ ǈ ǋ titlecase", "ΑΒΓ αβγ",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "ab" * 40, "          \n          ", "\n\t \n\t ",
    "<s>", "</s>", "<unk>", "<s> Hello</s>", "Hello<s>world</s>",
    "<|begin_of_text|>Hi<|eot_id|>", "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
    "<|endoftext|>", "text<|endoftext|>more", "<|im_start|><|im_end|>", "< |im_start| >", "<|im_start",
    "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>",
]

# Strings with special-token text are checked with and without parse_special.
SPECIAL_MARKERS = ("<s>", "</s>", "<unk>", "<|")


def main():
    cases = []
    for t in TEXTS:
        cases.append({"text": t, "parse_special": False})
        if any(m in t for m in SPECIAL_MARKERS):
            cases.append({"text": t, "parse_special": True})
    out = pathlib.Path(__file__).resolve().parents[2] / "tests/fixtures/tokenizer/corpus.json"
    out.write_text(json.dumps(cases, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{out}: {len(cases)} cases")


if __name__ == "__main__":
    main()
