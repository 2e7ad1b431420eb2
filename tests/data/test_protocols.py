"""The two protocols of the paper's sequences: "study" and "paper" (as published)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from classp.data import DataOptions, load_sequence
from classp.engine import RunConfig, evaluate, run
from classp.errors import UserError


def _idx_labels(path):
    data = path.read_bytes()
    return np.frombuffer(data, dtype=np.uint8, offset=8)


def test_the_paper_protocol_trains_on_whole_training_sets_in_file_order(vision_data_dir):
    paper = load_sequence("mnist-fmnist", DataOptions(data_dir=vision_data_dir, protocol="paper"))
    study = load_sequence("mnist-fmnist", DataOptions(data_dir=vision_data_dir))
    labels = _idx_labels(vision_data_dir / "MNIST" / "raw" / "train-labels-idx1-ubyte")
    assert paper.tasks[0].train.y.tolist() == labels.tolist()  # all 200, in the file's order
    assert len(paper.tasks[0].val) == 0 and len(paper.tasks[1].val) == 0
    assert len(study.tasks[0].train) == 180 and len(study.tasks[0].val) == 20
    p = paper.protocol
    assert (p.name, p.epochs, p.batch_size, p.shuffle, p.model, p.train_eval_mode) == (
        "paper", (4, 1), 32, False, "paper-cnn-published", "train")
    assert study.protocol.train_eval_mode == "eval" and study.protocol.model == "paper-cnn"


def test_the_paper_protocol_exists_for_the_paper_s_sequences_only():
    with pytest.raises(UserError, match="protocol 'paper' exists for the paper's sequences only"):
        load_sequence("split-digits", DataOptions(protocol="paper"))
    with pytest.raises(UserError, match="unknown protocol 'published'"):
        load_sequence("mnist-fmnist", DataOptions(protocol="published"))


def test_the_published_network_drops_whole_channels_after_pooling():
    from classp.models import PaperCNN

    torch.manual_seed(0)
    net = PaperCNN(channel_dropout=True).train()
    x = torch.ones(2, 64, 12, 12)
    dropped = net.dropout1(x)
    per_channel = dropped.flatten(2)
    # every channel is all zero or all scaled: whole feature maps are dropped
    assert bool(((per_channel == 0).all(2) | (per_channel == 1 / 0.75).all(2)).all())
    assert bool((per_channel == 0).all(2).any())
    # the second Dropout2d of the script sees a 2-D tensor: torch treats it element-wise,
    # which is what our nn.Dropout does (same random stream, same mask)
    h = torch.ones(16, 128)
    torch.manual_seed(1)
    with pytest.warns(UserWarning, match="dropout2d"):
        script = torch.nn.Dropout2d(0.5)(h)
    torch.manual_seed(1)
    assert torch.equal(net.dropout2(h), script)


class _EvalCheck:
    """After each task: the engine's numbers against our own eval-mode evaluation."""

    def __init__(self):
        self.same = {"train": [], "test": []}

    def on_run_start(self, *args):
        pass

    def on_step(self, event):
        pass

    def on_task_end(self, event):
        for split in ("train", "test"):
            for j, acc in enumerate(event.accuracy[split]):
                task = self.sequence.tasks[j]
                self.same[split].append(acc == evaluate(event.model, task.split(split), 1024))

    def on_run_end(self, result):
        pass


@pytest.mark.parametrize("protocol", ["paper", "study"])
def test_the_published_column_is_evaluated_in_training_mode(vision_data_dir, protocol):
    sequence = load_sequence("mnist-fmnist", DataOptions(data_dir=vision_data_dir, protocol=protocol))
    check = _EvalCheck()
    check.sequence = sequence
    config = RunConfig(sequence="mnist-fmnist", method="sgd", method_params={"lr": 0.05},
                       protocol=protocol, eval_splits=("test",), epochs=(1, 1))
    run(config, [check], sequence=sequence)
    assert all(check.same["test"])  # held-out test sets: eval mode, always
    if protocol == "paper":  # dropout active: the numbers are not the eval-mode ones
        assert not any(check.same["train"])
    else:
        assert all(check.same["train"])


def test_training_stops_at_the_first_pass_whose_last_batch_loss_is_below_the_target(tmp_path):
    class Losses:
        def __init__(self):
            self.steps = []

        def on_run_start(self, *a):
            pass

        def on_step(self, event):
            self.steps.append((event.task, event.loss))

        def on_task_end(self, event):
            pass

        def on_run_end(self, result):
            pass

    sequence = load_sequence("split-digits")
    losses = Losses()
    target, cap = 0.05, 12
    config = RunConfig(sequence="split-digits", method="sgd", method_params={"lr": 0.05},
                       loss_targets=(target,), epochs=cap, log_every=1)
    run(config, [losses], sequence=sequence)
    for k, task in enumerate(sequence.tasks):
        per_pass = -(-len(task.train) // 32)
        mine = [loss for t, loss in losses.steps if t == k]
        last_of_pass = mine[per_pass - 1::per_pass]
        expected = next((i + 1 for i, loss in enumerate(last_of_pass) if loss < target), cap)
        assert len(mine) == expected * per_pass
    assert any(len([1 for t, _ in losses.steps if t == k]) > -(-len(sequence.tasks[k].train) // 32)
               for k in range(5))  # some task needed more than one pass


def test_bad_loss_targets_are_refused_before_anything_runs():
    for targets, match in (((0.1, 0.2),  "2 loss targets given for 5 tasks"),
                           ((-1.0,), "loss targets must be positive finite numbers")):
        with pytest.raises(UserError, match=match):
            run(RunConfig(sequence="split-digits", method="sgd", loss_targets=targets))


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def text_dir(tmp_path):
    words = "profit fell sharply rose steady market shares don't".split()
    fpb = [(" ".join(words[(i + j) % 8] for j in range(3 + i % 9)), i % 3) for i in range(60)]
    imdb = [(" ".join(words[(i * 3 + j) % 8] for j in range(4 + i % 7)) + ".", i % 2) for i in range(40)]
    _write_csv(tmp_path / "financial_phrasebank.csv", ["sentence", "label"], fpb)
    _write_csv(tmp_path / "imdb.csv", ["text", "label"], imdb)
    return tmp_path


def test_imdb_labels_follow_the_named_mapping(text_dir):
    corrected = load_sequence("fpb-imdb", DataOptions(data_dir=text_dir))
    published = load_sequence("fpb-imdb", DataOptions(data_dir=text_dir, imdb_labels="published"))
    imdb_c, imdb_p = corrected.tasks[1], published.tasks[1]
    assert set(imdb_c.train.y.tolist()) == {0, 2}  # pos -> FPB's positive
    assert set(imdb_p.train.y.tolist()) == {0, 1}  # pos -> FPB's neutral, as published
    assert torch.equal(imdb_c.train.y == 2, imdb_p.train.y == 1)
    assert "IMDB labels: published (pos -> neutral, as published)" in published.notes[0]
    with pytest.raises(UserError, match="unknown IMDB label mapping 'swap'"):
        load_sequence("fpb-imdb", DataOptions(data_dir=text_dir, imdb_labels="swap"))


@pytest.mark.parametrize("bad, shown", [("7", "7"), ("-1", "-1"), ("positive", "'positive'")])
def test_a_label_outside_the_task_s_classes_names_file_and_row(text_dir, bad, shown):
    rows = list(csv.reader(open(text_dir / "imdb.csv")))
    rows[4][1] = bad  # data row 3
    _write_csv(text_dir / "imdb.csv", rows[0], rows[1:])
    with pytest.raises(UserError, match=rf"imdb.csv \(train split\), row 3: label {shown} is not one of 0, 1"):
        load_sequence("fpb-imdb", DataOptions(data_dir=text_dir))


def test_the_paper_text_protocol_tokenizes_with_spacy_against_a_whitespace_vocabulary(text_dir):
    paper = load_sequence("fpb-imdb", DataOptions(data_dir=text_dir, protocol="paper"))
    assert "spaCy's English tokenizer" in paper.notes[0]
    p = paper.protocol
    assert (p.batch_size, p.shuffle, p.model, p.loss_targets["classp"]) == (
        750, True, "paper-transformer-published", (0.005, 0.28))
    # "shares." and "don't": spaCy splits off "." and "n't", which the whitespace
    # vocabulary of the script never holds: they become UNK (1), as published
    from classp.data.text import UNK, spacy_tokenizer

    assert spacy_tokenizer()("don't stop.") == ["do", "n't", "stop", "."]
    imdb = paper.tasks[1]
    assert (imdb.train.x == UNK).any()
    study = load_sequence("fpb-imdb", DataOptions(data_dir=text_dir))
    assert not (study.tasks[1].train.x == UNK).any()  # its own vocabulary covers it


def test_the_published_text_protocol_needs_a_target_for_other_methods(text_dir):
    config = RunConfig(sequence="fpb-imdb", method="si", protocol="paper", data_dir=str(text_dir))
    with pytest.raises(UserError, match="has loss targets for classp, sgd, adam, ewc only; give --loss-targets"):
        run(config)
