"""The paper's models, and a plain MLP, registered by name.

`paper-cnn` is the network of the paper's vision experiment (PyTorch's MNIST example:
about 1.2 M parameters in 8 tensors). `paper-transformer` is its text model: a 600-d
embedding, one encoder layer with 30 heads, and a linear head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from classp.errors import UserError


@dataclass(frozen=True)
class InputShape:
    """What a task sequence feeds a model: images (channels, height, width) or token ids."""

    kind: str  # "image" or "tokens"
    shape: tuple[int, ...]  # (C, H, W) for images, (sequence length,) for tokens
    num_classes: int  # output units (of each head)
    vocab_size: int = 0
    heads: int = 1  # task-incremental: one head per task (classp.scenarios)


class PaperCNN(nn.Module):
    """conv 32 -> conv 64 -> max-pool -> dropout 0.25 -> fc 128 -> dropout 0.5 -> fc 10.

    `channel_dropout=True` is the published script's network: its first dropout is
    `Dropout2d(0.25)`, which drops whole feature maps (all 144 positions of a channel at
    once) rather than single activations. Its second is `Dropout2d(0.5)` applied to the
    2-D output of fc1, which torch (2.x, as in 2.15 here) treats element-wise, with a
    deprecation warning: we write that one as the element-wise `Dropout(0.5)` it is, and a
    test checks that the two agree on this torch.
    """

    def __init__(self, in_channels: int = 1, height: int = 28, width: int = 28, num_classes: int = 10,
                 channel_dropout: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout2d(0.25) if channel_dropout else nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        flat = 64 * ((height - 4) // 2) * ((width - 4) // 2)
        self.fc1 = nn.Linear(flat, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.flatten(self.dropout1(torch.max_pool2d(x, 2)), 1)
        x = self.dropout2(torch.relu(self.fc1(x)))
        return self.fc2(x)


class PaperTransformer(nn.Module):
    """Embedding 600 -> dropout 0.1 -> layer norm -> 1 encoder layer (30 heads) -> layer norm
    -> mean over tokens -> linear to the classes."""

    def __init__(self, vocab_size: int, num_classes: int = 3, d_model: int = 600, heads: int = 30,
                 dropout: float = 0.1, pad_id: int = 0):
        super().__init__()
        self.pad_id = pad_id
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.norm_in = nn.LayerNorm(d_model)
        self.encoder = nn.TransformerEncoderLayer(
            d_model, heads, dim_feedforward=d_model, dropout=dropout, batch_first=True
        )
        self.norm_out = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens):
        pad = tokens == self.pad_id
        x = self.norm_in(self.dropout(self.embedding(tokens)))
        x = self.norm_out(self.encoder(x, src_key_padding_mask=pad))
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        pooled = (x * keep).sum(1) / keep.sum(1).clamp_min(1.0)  # mean over real tokens
        return self.head(pooled)


class MLP(nn.Module):
    """Flatten -> (Linear -> ReLU) x len(hidden) -> Linear."""

    def __init__(self, in_features: int, num_classes: int, hidden: tuple[int, ...] = (256, 256)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def _paper_cnn(inp: InputShape) -> nn.Module:
    if inp.kind != "image":
        raise UserError("model 'paper-cnn' needs image tasks; use 'paper-transformer' or 'mlp' for text")
    c, h, w = inp.shape
    return PaperCNN(c, h, w, inp.num_classes)


class PublishedTransformer(nn.Module):
    """The published text script's network: embedding 600 (id 0 pads) -> dropout 0.1 ->
    layer norm -> one encoder layer (30 heads, torch's default 2,048-wide feed-forward,
    sequence-first, no padding mask) -> the same layer norm again -> the output at the last
    position (padding when the text is shorter than 30 tokens) -> linear to the classes."""

    def __init__(self, vocab_size: int, num_classes: int = 3, d_model: int = 600, heads: int = 30,
                 dropout: float = 0.1, pad_id: int = 0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)  # used twice, as published
        self.encoder = nn.TransformerEncoderLayer(d_model, heads, dropout=dropout)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens):
        x = self.norm(self.dropout(self.embedding(tokens))).transpose(0, 1)  # (S, N, E)
        x = self.norm(self.encoder(x))
        return self.head(x[-1])


def _paper_transformer(inp: InputShape) -> nn.Module:
    if inp.kind != "tokens":
        raise UserError("model 'paper-transformer' needs text tasks; use 'paper-cnn' or 'mlp' for images")
    return PaperTransformer(inp.vocab_size, inp.num_classes)


def _published_cnn(inp: InputShape) -> nn.Module:
    if inp.kind != "image":
        raise UserError("model 'paper-cnn-published' needs image tasks; use 'paper-transformer' for text")
    c, h, w = inp.shape
    return PaperCNN(c, h, w, inp.num_classes, channel_dropout=True)


def _published_transformer(inp: InputShape) -> nn.Module:
    if inp.kind != "tokens":
        raise UserError("model 'paper-transformer-published' needs text tasks; use 'paper-cnn' for images")
    return PublishedTransformer(inp.vocab_size, inp.num_classes)


def _mlp(hidden: tuple[int, ...], name: str) -> Callable[[InputShape], nn.Module]:
    def build(inp: InputShape) -> nn.Module:
        if inp.kind != "image":
            raise UserError(f"model {name!r} takes images; use 'paper-transformer' for text")
        in_features = 1
        for d in inp.shape:
            in_features *= d
        return MLP(in_features, inp.num_classes, hidden)

    return build


MODELS: dict[str, Callable[[InputShape], nn.Module]] = {
    "paper-cnn": _paper_cnn,
    "paper-transformer": _paper_transformer,
    "paper-cnn-published": _published_cnn,
    "paper-transformer-published": _published_transformer,
    "mlp": _mlp((256, 256), "mlp"),
    # the reference protocols' networks: Hsu et al. and van de Ven et al. (split MNIST),
    # van de Ven et al. (permuted MNIST)
    "mlp-400": _mlp((400, 400), "mlp-400"),
    "mlp-1000": _mlp((1000, 1000), "mlp-1000"),
}


def check_model_name(name: str) -> None:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")


def build_model(name: str, inp: InputShape) -> nn.Module:
    check_model_name(name)
    return MODELS[name](inp)
