"""Financial PhraseBank then IMDB, through the `datasets` library, tokenised as the paper does.

Tokenisation: whitespace tokens, the first 30 of each text; the vocabulary is every token
that occurs in those first 30 tokens of a training text of any task (id 0 pads, id 1 is
unknown). A source is a Hugging Face dataset id (`id` or `id:config`) or a local CSV,
Parquet or JSON Lines file with a text column (`sentence` or `text`) and a `label` column.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from classp.data.base import Split, Task, carve_validation
from classp.errors import UserError

MAX_TOKENS = 30
PAD, UNK = 0, 1
TEXT_COLUMNS = ("sentence", "text")
LOCAL_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".json": "json", ".jsonl": "json"}


@dataclass(frozen=True)
class TextSource:
    name: str  # task name
    source: str  # HF id[:config] or a local file
    test_fraction: float = 0.0  # carve a test split when the source has none


def tokenize(text: str) -> list[str]:
    return text.split()[:MAX_TOKENS]


def _load_rows(source: str) -> dict[str, tuple[list[str], list[int]]]:
    """split name -> (texts, labels)."""
    import datasets

    path = Path(source)
    try:
        if path.suffix in LOCAL_SUFFIXES:
            if not path.exists():
                raise UserError(f"text data file not found: {path}; give an existing "
                                f"{'/'.join(LOCAL_SUFFIXES)} file or a Hugging Face dataset id")
            ds = datasets.load_dataset(LOCAL_SUFFIXES[path.suffix], data_files=str(path))
        else:
            name, _, config = source.partition(":")
            ds = datasets.load_dataset(name, config or None)
    except UserError:
        raise
    except Exception as exc:  # offline, unknown id, bad file: all surface here
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot load text dataset {source!r}: {first}; pass a local "
                        f"CSV/Parquet/JSONL file instead (columns: sentence or text, label)") from None
    out = {}
    for split_name, split in ds.items():
        column = next((c for c in TEXT_COLUMNS if c in split.column_names), None)
        if column is None or "label" not in split.column_names:
            raise UserError(f"text dataset {source!r} needs a 'sentence' or 'text' column and a "
                            f"'label' column; it has {', '.join(split.column_names)}")
        out[split_name] = (list(split[column]), [int(v) for v in split["label"]])
    return out


def build_vocabulary(texts: Iterable[str]) -> dict[str, int]:
    vocab = {"<pad>": PAD, "<unk>": UNK}
    for text in texts:
        for token in tokenize(text):
            vocab.setdefault(token, len(vocab))
    return vocab


def encode(texts: list[str], vocab: dict[str, int]) -> torch.Tensor:
    ids = torch.full((len(texts), MAX_TOKENS), PAD, dtype=torch.long)
    for i, text in enumerate(texts):
        tokens = [vocab.get(t, UNK) for t in tokenize(text)]
        if tokens:
            ids[i, : len(tokens)] = torch.tensor(tokens)
    return ids


def load_text_tasks(sources: list[TextSource], val_fraction: float) -> tuple[list[Task], int]:
    """Tasks in order, and the vocabulary size."""
    raw = [(s, _load_rows(s.source)) for s in sources]
    vocab = build_vocabulary(t for _, rows in raw for t in rows["train"][0])
    tasks = []
    for source, rows in raw:
        texts, labels = rows["train"]
        x, y = encode(texts, vocab), torch.tensor(labels)
        if "test" in rows:
            test = Split(encode(rows["test"][0], vocab), torch.tensor(rows["test"][1]))
        else:  # Financial PhraseBank has a single split
            rest, test = carve_validation(x, y, source.test_fraction or 0.2, seed=1)
            x, y = rest.x, rest.y
        train, val = carve_validation(x, y, val_fraction)
        tasks.append(Task(source.name, train, val, test))
    return tasks, len(vocab)
