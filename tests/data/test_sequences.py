"""Each task sequence: its tasks, splits and protocol, loaded by the real loading code."""

from __future__ import annotations

import csv

import pytest
import torch

from classp.data import DataOptions, load_sequence
from classp.errors import UserError


def test_split_digits_has_five_tasks_of_two_digits():
    seq = load_sequence("split-digits")
    assert [t.name for t in seq.tasks] == [f"digits-{a}{a + 1}" for a in range(0, 10, 2)]
    total = 0
    for k, task in enumerate(seq.tasks):
        for split in (task.train, task.val, task.test):
            assert set(split.y.unique().tolist()) == {2 * k, 2 * k + 1}
            assert split.x.shape[1:] == (1, 8, 8)
            total += len(split)
    assert total == 1797  # every digit once, no overlap between splits
    assert seq.input.num_classes == 10


def test_permuted_digits_keeps_task_one_and_permutes_pixels_of_the_others():
    seq = load_sequence("permuted-digits", DataOptions(num_tasks=3))
    assert len(seq.tasks) == 3
    first, second = seq.tasks[0].train.x, seq.tasks[1].train.x
    assert not torch.equal(first, second)
    # same pixels, other places
    torch.testing.assert_close(first.flatten(1).sort(1).values, second.flatten(1).sort(1).values)
    assert torch.equal(seq.tasks[0].train.y, seq.tasks[1].train.y)
    # the permutation is fixed: loading again gives the same tasks
    again = load_sequence("permuted-digits", DataOptions(num_tasks=3))
    assert torch.equal(again.tasks[2].test.x, seq.tasks[2].test.x)


def test_mnist_fmnist_follows_the_paper_protocol(vision_data_dir):
    seq = load_sequence("mnist-fmnist", DataOptions(data_dir=vision_data_dir, val_fraction=0.1))
    mnist, fmnist = seq.tasks
    assert (mnist.name, fmnist.name) == ("mnist", "fmnist")
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (180, 20, 100)
    assert mnist.train.x.shape[1:] == (1, 28, 28) and mnist.train.x.dtype == torch.float32
    p = seq.protocol
    assert (p.epochs, p.batch_size, p.shuffle, p.model, p.eval_train) == ((4, 1), 32, False,
                                                                           "paper-cnn", True)
    # normalised with MNIST's (0.1307, 0.3081): a 0 pixel maps to -0.1307 / 0.3081
    assert mnist.train.x.min().item() == pytest.approx(-0.1307 / 0.3081, rel=1e-5)
    # the gzipped Fashion-MNIST files were unpacked where torchvision looks
    assert (vision_data_dir / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists()


@pytest.mark.parametrize("name, n_tasks", [("split-mnist", 5), ("permuted-mnist", 5),
                                           ("split-fmnist", 5), ("permuted-fmnist", 5)])
def test_standard_benchmarks_load_from_torchvision_files(vision_data_dir, name, n_tasks):
    seq = load_sequence(name, DataOptions(data_dir=vision_data_dir))
    assert len(seq.tasks) == n_tasks
    if name.startswith("split"):
        assert set(seq.tasks[2].train.y.unique().tolist()) == {4, 5}
    else:
        assert torch.equal(seq.tasks[0].test.y, seq.tasks[3].test.y)


def test_a_missing_data_directory_names_the_expected_paths(tmp_path):
    with pytest.raises(UserError) as err:
        load_sequence("split-mnist", DataOptions(data_dir=tmp_path / "nowhere"))
    message = str(err.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message and "--download" in message


def test_subsample_keeps_a_fraction_of_every_split():
    full = load_sequence("split-digits")
    small = load_sequence("split-digits", DataOptions(subsample=0.5))
    for a, b in zip(full.tasks, small.tasks):
        assert len(b.train) == round(len(a.train) * 0.5)
    assert "subsampled" in small.notes[0]


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def test_fpb_imdb_from_local_csv_files_uses_whitespace_tokens_and_three_classes(tmp_path):
    words = "profit loss market share rose fell sharply quarter".split()
    fpb = [(" ".join(words[(i + j) % 8] for j in range(5 + i % 40)), i % 3) for i in range(90)]
    imdb = [(f"movie review number {i} " + "great " * (i % 50), i % 2) for i in range(60)]
    _write_csv(tmp_path / "financial_phrasebank.csv", ["sentence", "label"], fpb)
    _write_csv(tmp_path / "imdb.csv", ["text", "label"], imdb)
    seq = load_sequence("fpb-imdb", DataOptions(data_dir=tmp_path))
    assert [t.name for t in seq.tasks] == ["fpb", "imdb"]
    assert seq.input.kind == "tokens" and seq.input.num_classes == 3
    assert seq.tasks[0].train.x.shape[1] == 30  # the first 30 whitespace tokens
    assert set(seq.tasks[0].train.y.tolist()) == {0, 1, 2}
    assert seq.protocol.model == "paper-transformer"
    total = sum(len(s) for s in (seq.tasks[0].train, seq.tasks[0].val, seq.tasks[0].test))
    assert total == 90


def test_text_tokeniser_pads_and_keeps_the_first_thirty_tokens():
    from classp.data.text import PAD, build_vocabulary, encode

    text = " ".join(f"w{i}" for i in range(40))
    vocab = build_vocabulary([text])
    ids = encode([text, "w0 unseen"], vocab)
    assert len(vocab) == 2 + 30  # pad, unk and the first 30 tokens only
    assert ids[0].tolist() == [vocab[f"w{i}"] for i in range(30)]
    assert ids[1, 1].item() == 1 and (ids[1, 2:] == PAD).all()


def test_a_text_file_without_the_needed_columns_is_a_clear_error(tmp_path):
    _write_csv(tmp_path / "financial_phrasebank.csv", ["words", "y"], [("a b", 0)])
    _write_csv(tmp_path / "imdb.csv", ["text", "label"], [("a b", 0)])
    with pytest.raises(UserError, match="needs a 'sentence' or 'text' column"):
        load_sequence("fpb-imdb", DataOptions(data_dir=tmp_path))


@pytest.mark.parametrize("content, message", [
    ("", "is empty; give a file with rows of text and label"),
    ("sentence,label\n", "has no data rows (a header only?)"),
    ("sentence,label\r\n\r\n", "has no data rows (a header only?)"),
])
def test_an_empty_or_header_only_text_file_is_called_so(tmp_path, content, message):
    """It is a local CSV file: the error must not tell the user to pass one."""
    (tmp_path / "financial_phrasebank.csv").write_text(content)
    _write_csv(tmp_path / "imdb.csv", ["text", "label"], [("a b", 0)])
    with pytest.raises(UserError) as err:
        load_sequence("fpb-imdb", DataOptions(data_dir=tmp_path))
    assert str(err.value).startswith(f"text data file {tmp_path / 'financial_phrasebank.csv'} ")
    assert message in str(err.value) and "instead" not in str(err.value)


def test_a_jsonl_file_of_blank_lines_has_no_data_rows(tmp_path):
    """Found by reading the file, not from the datasets library's own error text."""
    (tmp_path / "financial_phrasebank.jsonl").write_text("\n  \n")
    _write_csv(tmp_path / "imdb.csv", ["text", "label"], [("a b", 0)])
    with pytest.raises(UserError, match="financial_phrasebank.jsonl has no data rows"):
        load_sequence("fpb-imdb", DataOptions(data_dir=tmp_path))


def test_a_hub_dataset_is_read_from_the_cache_unless_download_is_asked(tmp_path):
    """Without --download no request leaves the machine: offline, the Hub client would
    retry for half a minute, logging each try, before the same failure."""
    _write_csv(tmp_path / "imdb.csv", ["text", "label"], [("a b", 0)])  # FPB: the Hub id
    with pytest.raises(UserError) as err:
        load_sequence("fpb-imdb", DataOptions(data_dir=tmp_path))
    assert "OfflineModeIsEnabled" in str(err.value)  # refused before any request
    assert str(err.value).endswith("or add --download on a machine with internet")


def test_unknown_sequence_lists_the_valid_names():
    with pytest.raises(UserError, match="unknown sequence 'mnist'; choose one of: mnist-fmnist"):
        load_sequence("mnist")
