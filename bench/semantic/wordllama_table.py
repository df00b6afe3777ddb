"""WordLlama (PyPI wordllama 0.4.0.post1, MIT; its l2_supercat 256-dimension token table ships
in the wheel): a static table trained for sentence similarity, as another cheap path beside the
shipped one. Needs and tools (as ceiling.py's tool texts) are embedded by the package itself
(its tokenizer, mean of token vectors, unit length) and ranked alone and with BM25, with BM25
and the shipped table from the same run.

    /tmp/distil/bin/pip install wordllama==0.4.0.post1
    /tmp/distil/bin/python bench/semantic/wordllama_table.py
"""

from pathlib import Path

import wordllama
from wordllama import WordLlama

import ceiling as C


def main() -> None:
    # The package's own folder is a cache that already holds the weights and the tokenizer:
    # nothing is downloaded.
    model = WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
    run = C.Eval()
    tools, texts, lex = run.tools, run.texts, run.lex
    q = model.embed(texts, norm=True)
    for label, text_of in C.TOOL_TEXTS.items():
        cos = q @ model.embed([text_of(t) for t in tools], norm=True).T
        run.results.append((f"WordLlama 256, tool as '{label}'", cos))
        run.results.append((f"WordLlama 256 + BM25, tool as '{label}'", C.combine(cos, lex)))
    run.print()


if __name__ == "__main__":
    main()
