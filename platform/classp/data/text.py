"""Financial PhraseBank then IMDB, through the `datasets` library, tokenised as the paper does.

Tokenisation (protocol "study"): whitespace tokens, the first 30 of each text; the
vocabulary is every token that occurs in those first 30 tokens of a training text of any
task (id 0 pads, id 1 is unknown).

Protocol "paper", as the published script: the first 30 tokens of spaCy's rule-based
English tokenizer (`spacy.blank("en")`: no model download; the optional extra `text`
installs spaCy; without it, whitespace tokens, and the run's notes say so), looked up in a
vocabulary of the whitespace tokens of the whole texts (so spaCy's "n't" or "," are
unknown unless they also stand alone somewhere, as in the script). A source is a Hugging Face dataset id (`id` or `id:config`) or a local CSV,
Parquet or JSON Lines file with a text column (`sentence` or `text`) and a `label` column.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from classp.data.base import Split, Task, carve_validation
from classp.errors import UserError, first_line

MAX_TOKENS = 30
PAD, UNK = 0, 1
TEXT_COLUMNS = ("sentence", "text")
LOCAL_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".json": "json", ".jsonl": "json"}


@dataclass(frozen=True)
class TextSource:
    name: str  # task name
    source: str  # HF id[:config] or a local file
    test_fraction: float = 0.0  # carve a test split when the source has none
    label_map: dict[int, int] | None = None  # source label -> task label; others are errors


def tokenize(text: str) -> list[str]:
    return text.split()[:MAX_TOKENS]


def spacy_tokenizer():
    """spaCy's rule-based English tokenizer, or None when spaCy is not installed."""
    try:
        import spacy
    except ImportError:
        return None
    nlp = spacy.blank("en")
    return lambda text: [t.text for t in nlp.tokenizer(text)][:MAX_TOKENS]


def _map_labels(source: TextSource, split_name: str, labels: list) -> list[int]:
    """Labels as integers through the source's map; a bad one names the file and row."""
    out = []
    for row, value in enumerate(labels):
        try:
            label = int(value)
            if isinstance(value, float) and value != label:
                raise ValueError
        except (TypeError, ValueError):
            label = None
        if label is None or (source.label_map is not None and label not in source.label_map):
            allowed = ", ".join(map(str, source.label_map)) if source.label_map else "integers"
            raise UserError(f"{source.source} ({split_name} split), row {row}: label {value!r} is "
                            f"not one of {allowed}; fix the file's label column")
        out.append(source.label_map[label] if source.label_map is not None else label)
    return out


NEEDS = "give a file with rows of text and label (columns: sentence or text, label)"


def _check_local_file(path: Path) -> None:
    if not path.exists():
        raise UserError(f"text data file not found: {path}; give an existing "
                        f"{'/'.join(LOCAL_SUFFIXES)} file or a Hugging Face dataset id")
    if path.is_dir():
        raise UserError(f"text data file {path} is a folder; {NEEDS}")
    if path.stat().st_size == 0:
        raise UserError(f"text data file {path} is empty; {NEEDS}")
    if path.suffix in (".csv", ".jsonl") and not _has_data_rows(path):
        raise UserError(f"text data file {path} has no data rows (a header only?); {NEEDS}")


def _has_data_rows(path: Path) -> bool:
    """A CSV with a line after its header, a JSONL with a line at all (blank lines aside).
    Checked here rather than read off the datasets library's error, whose wording is its own."""
    header_lines = 1 if path.suffix == ".csv" else 0
    with open(path, encoding="utf-8", errors="replace") as lines:
        filled = (line for line in lines if line.strip())
        return sum(1 for _, _ in zip(range(header_lines + 1), filled)) > header_lines


def _load_rows(source: str, download: bool = False) -> dict[str, tuple[list[str], list[int]]]:
    """split name -> (texts, labels). A Hub id is read from the local cache unless
    `download`, as for the vision data: offline, the Hub client would retry for half a
    minute and log each try before failing."""
    import datasets

    datasets.disable_progress_bars()  # "Generating train split" bars: noise around our lines
    path = Path(source)
    try:
        if path.suffix in LOCAL_SUFFIXES:
            _check_local_file(path)
            ds = datasets.load_dataset(LOCAL_SUFFIXES[path.suffix], data_files=str(path))
        else:
            name, _, config = source.partition(":")
            with _hub_offline(not download):
                ds = datasets.load_dataset(name, config or None)
    except UserError:
        raise
    except Exception as exc:  # offline, unknown id, bad file: all surface here
        first = first_line(exc)
        raise UserError(f"cannot load text dataset {source!r}: {first}; pass a local "
                        f"CSV/Parquet/JSONL file instead (columns: sentence or text, label)"
                        + ("" if download else ", or add --download on a machine with "
                                                "internet")) from None
    out = {}
    for split_name, split in ds.items():
        column = next((c for c in TEXT_COLUMNS if c in split.column_names), None)
        if column is None or "label" not in split.column_names:
            raise UserError(f"text dataset {source!r} needs a 'sentence' or 'text' column and a "
                            f"'label' column; it has {', '.join(split.column_names)}")
        if split.num_rows == 0:
            raise UserError(f"text dataset {source!r} has no rows in its {split_name} split; {NEEDS}")
        out[split_name] = (list(split[column]), list(split["label"]))
    return out


@contextlib.contextmanager
def _hub_offline(offline: bool):
    """The Hub's offline switch for one call (both libraries read it when called)."""
    import datasets.config
    import huggingface_hub.constants

    saved = datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE
    if offline:
        datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved


def build_vocabulary(texts: Iterable[str], split=tokenize) -> dict[str, int]:
    vocab = {"<pad>": PAD, "<unk>": UNK}
    for text in texts:
        for token in split(text):
            vocab.setdefault(token, len(vocab))
    return vocab


def encode(texts: list[str], vocab: dict[str, int], split=tokenize) -> torch.Tensor:
    ids = torch.full((len(texts), MAX_TOKENS), PAD, dtype=torch.long)
    for i, text in enumerate(texts):
        tokens = [vocab.get(t, UNK) for t in split(text)]
        if tokens:
            ids[i, : len(tokens)] = torch.tensor(tokens)
    return ids


def load_text_tasks(sources: list[TextSource], val_fraction: float, published: bool = False,
                    download: bool = False) -> tuple[list[Task], int, str]:
    """Tasks in order, the vocabulary size and the name of the tokenizer used."""
    raw = [(s, _load_rows(s.source, download)) for s in sources]
    train_texts = [t for _, rows in raw for t in rows["train"][0]]
    split, tokenizer = tokenize, "whitespace, first 30"
    if published:
        vocab = build_vocabulary(train_texts, split=str.split)
        spacy_split = spacy_tokenizer()
        if spacy_split is not None:
            split, tokenizer = spacy_split, "spaCy's English tokenizer, first 30 (as published)"
        else:
            tokenizer = "whitespace, first 30 (spaCy not installed: pip install '.[text]')"
    else:
        vocab = build_vocabulary(train_texts)
    tasks = []
    for source, rows in raw:
        texts, labels = rows["train"]
        x, y = encode(texts, vocab, split), torch.tensor(_map_labels(source, "train", labels))
        if "test" in rows:
            test = Split(encode(rows["test"][0], vocab, split),
                         torch.tensor(_map_labels(source, "test", rows["test"][1])))
        else:  # Financial PhraseBank has a single split
            rest, test = carve_validation(x, y, source.test_fraction or 0.2, seed=1)
            x, y = rest.x, rest.y
        train, val = carve_validation(x, y, val_fraction)
        tasks.append(Task(source.name, train, val, test))
    return tasks, len(vocab), tokenizer
