"""WordLlama (PyPI wordllama 0.4.0.post1, MIT; its l2_supercat 256-dimension token table ships
in the wheel): a static table trained for sentence similarity, as another cheap path beside the
shipped one. Needs and tools (as ceiling.py's tool texts) are embedded by the package itself
(its tokenizer, mean of token vectors, unit length) and ranked alone and with BM25, with BM25
and the shipped table from the same run.

    /tmp/distil/bin/pip install wordllama==0.4.0.post1
    /tmp/distil/bin/python bench/semantic/wordllama_table.py
"""

import json
from pathlib import Path

import numpy as np
import wordllama
from wordllama import WordLlama

import ceiling as C


def main() -> None:
    # The package's own folder is a cache that already holds the weights and the tokenizer:
    # nothing is downloaded.
    model = WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
    tools = [C.tool_of(e) for e in json.loads((C.HERE / "catalog.json").read_text())["tools"]]
    needs = json.loads((C.HERE / "needs.json").read_text())["needs"]
    texts = [n["need"] for n in needs]
    right = [n.get("tools") or [n["tool"]] for n in needs]
    names = [t["name"] for t in tools]
    lex = C.bm25_matrix(tools, texts)
    rows, vecs = C.load_table(C.ROOT / "toolrank/data/word_vectors.bin")
    centre = C.catalog_centre(rows, vecs, tools)
    shipped = np.stack([C.static_vec(rows, vecs, [(q, 1.0)], centre) for q in texts]) @ np.stack(
        [C.static_tool(rows, vecs, t, centre) for t in tools]
    ).T
    results = [("BM25 alone", lex), ("static word vectors + BM25 (toolrank)", C.combine(shipped, lex))]
    q = model.embed(texts, norm=True)
    for label, text_of in C.TOOL_TEXTS.items():
        cos = q @ model.embed([text_of(t) for t in tools], norm=True).T
        results.append((f"WordLlama 256, tool as '{label}'", cos))
        results.append((f"WordLlama 256 + BM25, tool as '{label}'", C.combine(cos, lex)))
    print(f"{len(needs)} needs over {len(tools)} tools")
    for label, scores in results:
        t1, t3 = C.accuracy(scores, names, right)
        print(f"{label:<62} {t1:>5.1f}% {t3:>5.1f}%")


if __name__ == "__main__":
    main()
