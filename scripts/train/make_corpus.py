#!/usr/bin/env python3
"""Builds the reference run's user-text corpus from Debian packages (documentation, fortunes,
source code), so the training text is reproducible from this script and the package
versions it records, with no web crawl and no dataset hub.

    python3 scripts/train/make_corpus.py OUT_DIR [--debs DIR]

Downloads each package with `apt-get download` (into --debs, default OUT_DIR/debs), unpacks it
with `dpkg-deb -x` and writes one JSONL file per source, `{"text": …}` a line, one original
file (or fortune) per line, so each becomes one training document. Files are taken in sorted
path order and each source stops at its byte cap, so the same package versions give the same
bytes. MANIFEST.json records every package's version and sha256 and every output's size and
sha256. Documents that share a 64-byte window with a held-out evaluation text (normalized as
`nexus_train::data::held_out` does: lowercase, whitespace runs as one space) are dropped and
counted, since `distill train` refuses a corpus that contains any (generic boilerplate such as
a block of C `#include` lines does). Standard library only.

Licences: Python docs (PSF), Linux kernel docs (GPL-2.0), Perl docs (Artistic/GPL), the Rust
books (MIT/Apache-2.0), The Debian Administrator's Handbook (GPL-2.0+/CC-BY-SA-3.0), fortunes
(BSD-style, the offensive set left out), the Python standard library (PSF) and the Go standard
library (BSD-3-Clause). The text is training input only and is never committed or shipped.
"""
import argparse
import gzip
import hashlib
import html.parser
import json
import os
import re
import subprocess
import sys
from pathlib import Path

MB = 1 << 20

# name: (package, file globs under the unpacked tree, reader, byte cap)
SOURCES = {
    "python-docs": ("python3.11-doc", ["usr/share/doc/python3.11/html/_sources/**/*.rst.txt"], "text", 14 * MB),
    "linux-docs": ("linux-doc-6.1", ["usr/share/doc/linux-doc-6.1/Documentation/**/*.rst.gz"], "gz", 30 * MB),
    "perl-docs": ("perl-doc", ["usr/share/perl/5.36.0/pod/*.pod", "usr/share/perl/5.36.0/pod/*.pod.gz"], "pod", 12 * MB),
    "rust-books": ("rust-doc", [f"usr/share/doc/rust-doc/html/{b}/**/*.html" for b in
                                ("book", "reference", "rust-by-example", "nomicon", "edition-guide", "embedded-book", "rustc", "rustdoc")], "html", 14 * MB),
    "debian-handbook": ("debian-handbook", ["usr/share/doc/debian-handbook/html/en-US/*.html"], "html", 6 * MB),
    "fortunes": ("fortunes", ["usr/share/games/fortunes/*"], "fortune", 8 * MB),
    "python-stdlib": ("libpython3.11-stdlib", ["usr/lib/python3.11/**/*.py"], "text", 8 * MB),
    "go-stdlib": ("golang-1.19-src", ["usr/share/go-1.19/src/**/*.go"], "text", 12 * MB),
}


class TextOfHtml(html.parser.HTMLParser):
    """The readable text of a documentation page: block elements become line breaks, <pre>
    keeps its layout; navigation, scripts and styles are dropped with everything inside them."""
    SKIP = {"script", "style", "nav", "header", "footer", "head", "noscript", "button"}
    SKIP_CLASS = {"sidebar", "nav", "toc", "navheader", "navfooter", "nav-chapters", "nav-wrapper", "nav-wide-wrapper", "menu-bar", "docnav"}
    BLOCK = {"p", "div", "li", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "br", "tr", "table", "ul", "ol", "dt", "dd", "blockquote", "section"}
    VOID = {"br", "img", "meta", "link", "input", "hr", "wbr", "source", "col", "area", "base"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out, self.pre = [], 0
        self.skip_depth = 0  # open elements inside (and including) a skipped one

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            if tag == "br" and not self.skip_depth:
                self.out.append("\n")
            return
        if self.skip_depth or tag in self.SKIP or self.SKIP_CLASS.intersection((dict(attrs).get("class") or "").split()):
            self.skip_depth += 1
            return
        if tag == "pre":
            self.pre += 1
        if tag in self.BLOCK:
            self.out.append("\n")

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if self.skip_depth:
            self.skip_depth -= 1
            return
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in self.BLOCK:
            self.out.append("\n")

    def handle_data(self, data):
        if not self.skip_depth:
            self.out.append(data if self.pre else re.sub(r"\s+", " ", data))

    def text(self):
        t = "".join(self.out)
        t = re.sub(r"[ \t]+\n", "\n", t)
        return re.sub(r"\n{3,}", "\n\n", t).strip()


def read_html(path):
    p = TextOfHtml()
    p.feed(path.read_text(encoding="utf-8", errors="replace"))
    return [p.text()]


def read_pod(path):
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    # POD directives (=head1, =item…) keep their words; formatting codes (C<…>, B<…>) lose the brackets.
    text = re.sub(r"^=(?:pod|cut|begin \w+|end \w+|for \w+.*|encoding .*)$", "", text, flags=re.M)
    text = re.sub(r"^=(?:head\d|item|over|back)\s*", "", text, flags=re.M)
    return [re.sub(r"[A-Z]<{1,2}\s*([^<>]*?)\s*>{1,2}", r"\1", text).strip()]


def read_fortune(path):
    if path.suffix in (".dat", ".u8") or "off" in path.parts or path.is_symlink():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    return [f.strip() for f in text.split("\n%\n") if f.strip()]


READERS = {
    "text": lambda p: [p.read_text(encoding="utf-8", errors="replace")],
    "gz": lambda p: [gzip.decompress(p.read_bytes()).decode("utf-8", errors="replace")],
    "html": read_html,
    "pod": read_pod,
    "fortune": read_fortune,
}


WINDOW = 64
HELD_OUT = Path(__file__).resolve().parents[2] / "models/distill/heldout"


def normalize(text):
    return " ".join(text.split()).lower().encode("utf-8")


def held_out_windows():
    """Every 64-byte window of the held-out texts, and every 32-byte one (the quick filter):
    a shared 64-byte window always contains a document chunk that starts at a multiple of 32."""
    texts = []
    for p in sorted(HELD_OUT.iterdir()):
        if p.suffix == ".jsonl":
            for line in p.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    item = json.loads(line)
                    texts += [item[k] for k in ("text", "prompt", "response") if isinstance(item.get(k), str)]
                    texts += [m["content"] for m in item.get("messages", [])]
        else:
            texts.append(p.read_text(encoding="utf-8"))
    w64, w32 = set(), set()
    for t in map(normalize, texts):
        w64.update(t[i:i + WINDOW] for i in range(len(t) - WINDOW + 1))
        w32.update(t[i:i + WINDOW // 2] for i in range(len(t) - WINDOW // 2 + 1))
    return w64, w32


def overlaps(text, w64, w32):
    t, half = normalize(text), WINDOW // 2
    for p in range(0, len(t) - half + 1, half):
        if t[p:p + half] in w32 and any(t[s:s + WINDOW] in w64 for s in range(max(0, p - half), min(p, len(t) - WINDOW) + 1)):
            return True
    return False


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MB), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(package, debs):
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        subprocess.run(["apt-get", "download", package], cwd=debs, check=True, stdout=subprocess.DEVNULL)
        found = sorted(debs.glob(f"{package}_*.deb"))
    if len(found) != 1:
        sys.exit(f"error: expected one {package} .deb in {debs}, found {len(found)}")
    return found[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--debs", type=Path)
    args = ap.parse_args()
    out = args.out
    debs = args.debs or out / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    manifest = {"packages": {}, "outputs": {}}
    w64, w32 = held_out_windows()
    for name, (package, globs, reader, cap) in SOURCES.items():
        deb = fetch(package, debs)
        version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True).stdout.strip()
        manifest["packages"][package] = {"version": version, "deb": deb.name, "sha256": sha256(deb)}
        tree = out / "unpacked" / package
        if not tree.exists():
            tree.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
        files = sorted({p for g in globs for p in tree.glob(g) if p.is_file() and "testdata" not in p.parts and not p.name.endswith("_test.go")})
        dest, tmp = out / f"{name}.jsonl", out / f".{name}.jsonl.tmp"
        size = docs = dropped = 0
        with open(tmp, "w", encoding="utf-8") as f:
            for p in files:
                for text in READERS[reader](p):
                    if len(text.strip()) < 200 and reader != "fortune":
                        continue
                    if overlaps(text, w64, w32):
                        dropped += 1
                        continue
                    line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
                    if size + len(line) > cap:
                        break
                    f.write(line)
                    size, docs = size + len(line), docs + 1
                if size + 4096 > cap:
                    break
        os.replace(tmp, dest)
        manifest["outputs"][dest.name] = {"package": package, "files_seen": len(files), "documents": docs, "dropped_held_out_overlap": dropped, "bytes": size, "sha256": sha256(dest)}
        print(f"{dest.name}: {docs} documents ({dropped} dropped: held-out overlap), {size / MB:.1f} MiB from {package} {version}", flush=True)
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
