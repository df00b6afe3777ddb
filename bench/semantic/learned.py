"""A static word table learned to sum to whole-sentence meanings, beside the shipped one.

The shipped table (distill.py) gives each word the embedding of the word alone. Here the same
words are instead fitted so that the mean of a sentence's word vectors comes as close as it can
to all-MiniLM-L6-v2's embedding of the whole sentence (model2vec's "tokenlearn" idea, done as
one ridge regression): minimise |A W - T|^2 + lam |W - W0|^2, with A the sentences' bags of
words (each word 1/len), T the model's sentence embeddings, W0 the one-word embeddings (unit
length; words no sentence uses keep them). The sentences are offline text about software:
every `man -k .` summary of this machine and 20,000 of Debian's package descriptions
(`apt-cache dumpavail`). The fitted table goes through the shipped recipe (PCA to 256, centred
on the catalog at search time, + BM25) and is scored on needs.json and on
tests/data/search_needs.json ("worded", needs in the tools' own words), beside the one-word
table in the same run.

    /tmp/distil/bin/pip install scipy==1.17.1
    /tmp/distil/bin/python bench/semantic/learned.py [lam ...]   # default 0.003 0.03 0.3
"""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

import ceiling as C  # noqa: E402
from distill import encode, load_safetensors, model_dir, one_word_vectors  # noqa: E402

DEBIAN_SENTENCES = 20000


def corpus() -> list:
    man = subprocess.run(["man", "-k", "."], capture_output=True, text=True).stdout
    lines = {line.split(" - ", 1)[1].strip() for line in man.splitlines() if " - " in line}
    avail = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True).stdout
    debian = sorted({line.split(": ", 1)[1] for line in avail.splitlines() if line.startswith("Description: ")})
    random.Random(7).shuffle(debian)
    return sorted(lines) + debian[:DEBIAN_SENTENCES]


def sentence_targets(sentences: list) -> np.ndarray:
    mdir = model_dir()
    ids_of = {t: i for i, t in enumerate(mdir.joinpath("vocab.txt").read_text().splitlines())}
    w = load_safetensors(mdir / "model.safetensors")
    ids = [C.bert_ids(s, ids_of)[:64] for s in sentences]
    by_len: dict = {}
    for i, row in enumerate(ids):
        by_len.setdefault(len(row), []).append(i)
    out = np.zeros((len(sentences), 384), dtype=np.float32)
    # Equal-length batches: no padding, so no attention mask.
    for rows in by_len.values():
        for s in range(0, len(rows), 256):
            chunk = rows[s : s + 256]
            out[chunk] = encode(w, np.array([ids[r] for r in chunk]))
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def bags(sentences: list, rows: dict) -> sp.csr_matrix:
    r, c, v = [], [], []
    for i, s in enumerate(sentences):
        found = [x for w in C.words(s) if (x := C.table_row(rows, w)) is not None]
        for x in found:
            r.append(i)
            c.append(x)
            v.append(1.0 / len(found))
    return sp.csr_matrix((v, (r, c)), shape=(len(sentences), len(rows)), dtype=np.float64)


def fit(a: sp.csr_matrix, t: np.ndarray, w0: np.ndarray, lam: float, iterations: int = 200) -> np.ndarray:
    """Conjugate gradients on (A'A + lam I) W = A'T + lam W0, all columns at once."""
    ata = (a.T @ a).tocsr()

    def apply(x):
        return ata @ x + lam * x

    b = a.T @ t + lam * w0
    x = w0.astype(np.float64)
    r = b - apply(x)
    p = r.copy()
    rs = (r * r).sum(0)
    for _ in range(iterations):
        ap = apply(p)
        step = rs / np.maximum((p * ap).sum(0), 1e-30)
        x += p * step
        r -= ap * step
        rn = (r * r).sum(0)
        if np.sqrt(rn.max()) < 1e-6:
            break
        p = r + p * (rn / np.maximum(rs, 1e-30))
        rs = rn
    return x.astype(np.float32)


def reduce(w: np.ndarray, dims: int = 256, unit: bool = True) -> np.ndarray:
    """distill.py's recipe: centre, PCA, optionally unit rows (no quantisation: it costs < 1 need)."""
    centred = w - w.mean(0)
    sample = centred[np.random.default_rng(0).choice(len(centred), min(20000, len(centred)), replace=False)]
    _, _, vt = np.linalg.svd(sample, full_matrices=False)
    out = centred @ vt[:dims].T
    return out / np.linalg.norm(out, axis=1, keepdims=True) if unit else out


def main() -> None:
    lams = [float(x) for x in sys.argv[1:]] or [0.003, 0.03, 0.3]
    keep, w0, _ = one_word_vectors()
    w0 /= np.linalg.norm(w0, axis=1, keepdims=True)
    rows = {w: i for i, w in enumerate(keep)}
    sentences = corpus()
    a = bags(sentences, rows)
    t = sentence_targets(sentences)
    print(f"{len(sentences)} sentences, {int((np.asarray(a.sum(0)) > 0).sum())} of {len(keep)} words seen")

    tools = [C.tool_of(e) for e in json.loads((C.HERE / "catalog.json").read_text())["tools"]]
    names = [x["name"] for x in tools]
    sets = {}
    for label, path in (("needs.json", C.HERE / "needs.json"), ("worded", C.ROOT / "tests/data/search_needs.json")):
        needs = json.loads(path.read_text())["needs"]
        texts = [n["need"] for n in needs]
        sets[label] = (texts, [n.get("tools") or [n["tool"]] for n in needs], C.bm25_matrix(tools, texts))

    def score(vecs: np.ndarray, label: str) -> None:
        centre = C.catalog_centre(rows, vecs, tools)
        tool_vecs = np.stack([C.static_tool(rows, vecs, x, centre) for x in tools])
        cells = []
        for name, (texts, right, lex) in sets.items():
            cos = np.stack([C.static_vec(rows, vecs, [(q, 1.0)], centre) for q in texts]) @ tool_vecs.T
            alone, both = C.accuracy(cos, names, right), C.accuracy(C.combine(cos, lex), names, right)
            cells.append(f"{name} {alone[0]:5.1f}/{alone[1]:5.1f}, +BM25 {both[0]:5.1f}/{both[1]:5.1f}")
        print(f"{label:<36} " + " | ".join(cells), flush=True)

    score(reduce(w0), "one-word table (shipped recipe)")
    for lam in lams:
        fitted = fit(a, t, w0, lam)
        for unit in (True, False):
            score(reduce(fitted, unit=unit), f"fitted, lam {lam}, {'unit rows' if unit else 'raw rows'}")


if __name__ == "__main__":
    main()
