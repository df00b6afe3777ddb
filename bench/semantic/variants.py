"""Cheap ranking paths beside the shipped one: what each gives on the same needs.

Every path here costs a search no more than today's (word look-ups, one dot product per
tool), so any of them could ship; this measures whether one is worth it. Each row is scored on
needs.json (plain-language needs) and on tests/data/search_needs.json (needs worded like the
tools, which the shipped ranking gets all right: a path must not lose those).

1. The static word-vector table made other ways from the same one-word embeddings
   (distill.py's `one_word_vectors`): more PCA dimensions than the shipped 128, the leading
   components removed ("all-but-the-top", Mu and Viswanath 2018: they carry frequency, not
   meaning), SIF weights on or off, and the words centred on the mean of the catalog's words
   (as toolrank does when it builds an index).
2. WordNet 3.0 (Debian's wordnet-base, /usr/share/wordnet; Princeton's WordNet licence,
   permissive) synonyms, and optionally hypernyms, of each word: added to the need (query
   expansion) or to each tool's description (document expansion, at index time).

    apt-get install wamerican-small wordnet-base
    /tmp/distil/bin/python bench/semantic/variants.py

(venv as in distill.py's header; about three minutes.) Rows read "alone" for the embedding on
its own and "+BM25" for the hybrid toolrank ranks with.
"""

import json
from pathlib import Path

import numpy as np

from ceiling import (
    HERE,
    ROOT,
    accuracy,
    base_forms,
    bm25_matrix,
    catalog_centre,
    combine,
    load_table,
    static_tool,
    static_vec,
    tool_of,
    words,
)
from distill import one_word_vectors

WORDNET = Path("/usr/share/wordnet")
POS = ("noun", "verb", "adj", "adv")
POINTER_POS = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}


class WordNet:
    """Synonyms and hypernyms of a word, read from WordNet's own data files."""

    def __init__(self):
        self.index: dict = {}
        for pos in POS:
            for line in (WORDNET / f"index.{pos}").read_text().splitlines():
                if line.startswith(" "):
                    continue
                f = line.split()
                senses, pointers = int(f[2]), int(f[3])
                offsets = [int(x) for x in f[6 + pointers : 6 + pointers + senses]]
                self.index.setdefault(f[0], []).append((pos, offsets))
        self.data = {pos: (WORDNET / f"data.{pos}").read_bytes() for pos in POS}
        self.exceptions: dict = {}
        for pos in POS:
            for line in (WORDNET / f"{pos}.exc").read_text().splitlines():
                f = line.split()
                self.exceptions.setdefault(f[0], f[1])

    def synset(self, pos: str, offset: int):
        raw = self.data[pos]
        fields = raw[offset : raw.index(b"\n", offset)].decode().split(" | ")[0].split()
        count = int(fields[3], 16)
        lemmas = [fields[4 + 2 * i].lower().split("(")[0] for i in range(count)]
        at = 4 + 2 * count
        pointers = [
            (fields[at + 1 + 4 * j], int(fields[at + 2 + 4 * j]), POINTER_POS[fields[at + 3 + 4 * j]])
            for j in range(int(fields[at]))
        ]
        return lemmas, pointers

    def lemmas(self, word: str) -> list:
        if word in self.index:
            return [word]
        if word in self.exceptions:
            return [self.exceptions[word]]
        return [b for b in base_forms(word) if b in self.index][:1]

    def related(self, word: str, senses: int, hypernyms: bool) -> set:
        out: set = set()
        for lemma in self.lemmas(word):
            for pos, offsets in self.index[lemma]:
                for offset in offsets[:senses]:
                    lemmas, pointers = self.synset(pos, offset)
                    out.update(lemmas)
                    if hypernyms:
                        for symbol, o, p in pointers:
                            if symbol in ("@", "@i"):
                                out.update(self.synset(p, o)[0])
        parts = {x for lemma in out for x in lemma.split("_")}
        return parts - {word} - set(self.lemmas(word))

    def expand(self, text: str, senses: int, hypernyms: bool) -> str:
        return " ".join(x for w in words(text) for x in sorted(self.related(w, senses, hypernyms)))


def load_sets(tools: list):
    out = {}
    for label, path in (("needs.json", HERE / "needs.json"), ("worded", ROOT / "tests/data/search_needs.json")):
        needs = json.loads(path.read_text())["needs"]
        texts = [n["need"] for n in needs]
        right = [n.get("tools") or [n["tool"]] for n in needs]
        out[label] = (texts, right, bm25_matrix(tools, texts))
    return out


def row_text(label: str, figures: list) -> str:
    cells = " | ".join(f"{name}: alone {a:5.1f}/{b:5.1f}  +BM25 {c:5.1f}/{d:5.1f}" for name, (a, b, c, d) in figures)
    return f"{label:<44} {cells}"


def main() -> None:
    tools = [tool_of(e) for e in json.loads((HERE / "catalog.json").read_text())["tools"]]
    names = [t["name"] for t in tools]
    sets = load_sets(tools)

    def score(rows: dict, vecs: np.ndarray, centre=None, need_extra=None, lexical=None):
        if centre is not None:
            vecs = vecs - centre
        tool_vecs = np.stack([static_tool(rows, vecs, t) for t in tools])
        figures = []
        for label, (texts, right, lex) in sets.items():
            extra = need_extra(texts) if need_extra else [""] * len(texts)
            q = np.stack([static_vec(rows, vecs, [(t, 1.0), (e, 0.3)]) for t, e in zip(texts, extra)])
            cos = q @ tool_vecs.T
            lx = lexical(label, texts, lex) if lexical else lex
            figures.append((label, accuracy(cos, names, right) + accuracy(combine(cos, lx), names, right)))
        return figures

    print("top-1/top-3 in %, 60 tools; 'worded' is tests/data/search_needs.json\n")
    shipped_rows, shipped = load_table(ROOT / "toolrank/data/word_vectors.bin")
    shipped_centre = catalog_centre(shipped_rows, shipped, tools)
    print(row_text(f"shipped table ({shipped.shape[1]} dims), centred", score(shipped_rows, shipped, centre=shipped_centre)))

    print("\n1. tables from the same one-word embeddings")
    vocab, raw, sif = one_word_vectors()
    rows = {w: i for i, w in enumerate(vocab)}
    centred = raw - raw.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    for dims in (128, 256, 384):
        for skip in (0, 3):
            if dims + skip > raw.shape[1]:
                continue
            reduced = centred @ vt[skip : skip + dims].T
            reduced /= np.linalg.norm(reduced, axis=1, keepdims=True)
            for weighted in (True, False):
                vecs = reduced * sif[:, None].astype(np.float32) if weighted else reduced
                label = f"{dims} dims, top {skip} removed, SIF {'on' if weighted else 'off'}"
                print(row_text(label, score(rows, vecs)))
                if skip == 0:
                    print(row_text(label + ", catalog-centred", score(rows, vecs, centre=catalog_centre(rows, vecs, tools))))

    print("\n2. WordNet expansion, shipped table, centred")
    wn = WordNet()
    for senses, hyper in ((1, False), (2, False), (99, True)):
        kind = f"{'all' if senses == 99 else senses} sense(s){' + hypernyms' if hyper else ''}"
        expansions = {label: [wn.expand(t, senses, hyper) for t in texts] for label, (texts, _, _) in sets.items()}

        def lexical(label, texts, lex, expansions=expansions):
            return lex + 0.3 * bm25_matrix(tools, expansions[label])

        def need_extra(texts, expansions=expansions):
            label = next(k for k, v in sets.items() if v[0] is texts)
            return expansions[label]

        print(row_text(f"query, {kind}: BM25 only", score(shipped_rows, shipped, centre=shipped_centre, lexical=lexical)))
        print(row_text(f"query, {kind}: BM25 and vector", score(shipped_rows, shipped, centre=shipped_centre, need_extra=need_extra, lexical=lexical)))
        expanded = [dict(t, description=t["description"] + " " + wn.expand(t["description"], senses, hyper)) for t in tools]
        doc_sets = {label: bm25_matrix(expanded, texts) for label, (texts, _, _) in sets.items()}
        print(row_text(f"document, {kind}: BM25", score(shipped_rows, shipped, centre=shipped_centre, lexical=lambda label, texts, lex: doc_sets[label])))


if __name__ == "__main__":
    main()
