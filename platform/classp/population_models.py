"""The batched forward of a population: K members' models as one computation on stacked
parameters (classp.population keeps the stack; this module computes with it).

A forward takes inputs [K, B, ...] and returns logits [K, classes, B] (classes before the
batch, as cross_entropy takes an [N, C, d] input). Linear layers are batched matrix
products, in a [K, features, B] layout: both the product and its weight gradient are then
contiguous in the stacked weight's [K, out, in] layout (the fast layout measured on a CPU).
Convolutions are one grouped convolution with a group per member, which is how
`torch.func.vmap` batches them too.

Dropout is each member's own: its mask is drawn from the member's generator, in the
shape, memory layout and order in which the member's model alone draws it from the global
generator, so that on a CPU the member sees the very masks of its run alone. (On a GPU a
model alone draws through the fused dropout kernel, whose masks differ from these: there a
member's dropout is its own draws, not its run alone's.)

Models: the MLPs and the paper's CNN (`PaperCNN`, both dropout kinds), with any scenario's
output layer. Any other model is refused by `supports` before anything trains.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from classp import scenarios
from classp.models import MLP, PaperCNN

Forward = Callable[[Tensor], Tensor]


def supports(model: nn.Module) -> bool:
    """Whether `batched_forward` can compute this model (built with its output layer)."""
    if isinstance(model, MLP):
        return _mlp_layers(model) is not None
    return type(model) is PaperCNN and type(model.dropout2) is nn.Dropout


def batched_forward(template: nn.Module, stacked: dict[str, Tensor], draws: list[torch.Generator],
                    channels_last: bool) -> Forward:
    """The forward of K copies of `template` whose parameters are `stacked` ([K, ...] per
    name); member k's dropout masks come from `draws[k]`. `channels_last`: the members'
    models alone run channels-last (their dropout masks are drawn in that layout)."""
    if isinstance(template, MLP):
        layers = _mlp_layers(template)
        return lambda x: _mlp_forward(layers, stacked, x)
    output = _output_layer(template, "fc2")
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return lambda x: _cnn_forward(template, output, stacked, draws, layout, x)


def idle_parameters(model: nn.Module) -> set[str]:
    """The names of the parameters the training forward leaves out now: the heads of the
    other tasks (task-incremental). A run alone leaves their gradients None, so its
    optimizer skips them."""
    idle = set()
    for name, module in model.named_modules():
        if isinstance(module, scenarios.OutputHeads):
            for j, head in enumerate(module.heads):
                if j != module.active:
                    idle.update(f"{name}.heads.{j}.{p}" for p, _ in head.named_parameters())
    return idle


def _output_layer(model: nn.Module, name: str) -> tuple[str, str, nn.Module]:
    """(kind, name, module) of the model's output layer: a plain linear layer, a head per
    task (task-incremental) or the active outputs (class-incremental)."""
    module = model.get_submodule(name)
    if isinstance(module, scenarios.OutputHeads):
        return "heads", name, module
    if isinstance(module, scenarios.ActiveOutputs):
        return "active", name, module
    return "linear", name, module


def _mlp_layers(model: MLP) -> list[tuple[str, object]] | None:
    """An MLP's layers as (kind, what) for `_mlp_forward`, or None for a layer it lacks."""
    layers: list[tuple[str, object]] = []
    for index, module in enumerate(model.net):
        name = f"net.{index}"
        if isinstance(module, nn.Flatten | nn.ReLU):
            layers.append((type(module).__name__, None))
        elif isinstance(module, scenarios.OutputHeads | scenarios.ActiveOutputs):
            layers.append(("output", _output_layer(model, name)))
        elif type(module) is nn.Linear:
            layers.append(("linear", name))
        else:
            return None
    return layers


def _mlp_forward(layers, stacked: dict[str, Tensor], x: Tensor) -> Tensor:
    h = x
    for kind, what in layers:
        if kind == "Flatten":
            h = h.flatten(2).transpose(1, 2)  # [K, B, features] -> [K, features, B]
        elif kind == "ReLU":
            h = torch.relu(h)
        elif kind == "linear":
            h = _linear(stacked, what, h)
        else:
            h = _output(stacked, what, h)
    return h


def _cnn_forward(model: PaperCNN, output, stacked: dict[str, Tensor], draws: list[torch.Generator],
                 layout: torch.memory_format, x: Tensor) -> Tensor:
    """PaperCNN.forward, member by member in one computation: conv, conv, max-pool,
    dropout, fc, dropout, output layer."""
    K, B, C, H, W = x.shape
    # [K, B, C, H, W] -> [B, K*C, H, W]: member k's channels are group k of every convolution.
    h = x.transpose(0, 1).reshape(B, K * C, H, W).contiguous(memory_format=layout)
    h = torch.relu(_grouped_conv(stacked, "conv1", h, K))
    h = torch.relu(_grouped_conv(stacked, "conv2", h, K))
    h = torch.max_pool2d(h, 2)
    _, KC, H, W = h.shape
    h = h.view(B, K, KC // K, H, W)  # a view in either layout: members are whole channel blocks
    h = h * _dropout_noise(model.dropout1, draws, (B, KC // K, H, W), layout, h, dim=1)
    h = h.reshape(B, K, -1).permute(1, 2, 0)  # each member's flatten, as [K, features, B]
    h = torch.relu(_linear(stacked, "fc1", h))
    # Alone, the member's dropout draws a [B, 128] mask: the same, transposed to our layout.
    h = h * _dropout_noise(model.dropout2, draws, (B, h.shape[1]), torch.contiguous_format, h,
                           dim=0).transpose(1, 2)
    return _output(stacked, output, h)


def _grouped_conv(stacked: dict[str, Tensor], name: str, h: Tensor, K: int) -> Tensor:
    weight, bias = stacked[f"{name}.weight"], stacked.get(f"{name}.bias")
    weight = weight.reshape(-1, *weight.shape[2:])  # [K, out, in, kh, kw] -> [K*out, in, kh, kw]
    return F.conv2d(h, weight, None if bias is None else bias.reshape(-1), groups=K)


def _dropout_noise(module: nn.Module, draws: list[torch.Generator], shape: tuple[int, ...],
                   layout: torch.memory_format, like: Tensor, dim: int) -> Tensor:
    """Every member's dropout multiplier (mask / keep), stacked along `dim`: member k's is
    drawn from `draws[k]` as torch's dropout draws it alone on a CPU (a tensor of the
    input's shape and layout, or one value per channel for Dropout2d, filled by
    bernoulli_(keep), then divided by keep); in eval mode, ones."""
    if not module.training or module.p == 0:
        return torch.ones((), dtype=like.dtype, device=like.device)
    keep = 1.0 - module.p
    if isinstance(module, nn.Dropout2d):  # one value per feature map
        shape, layout = shape[:2] + (1,) * (len(shape) - 2), torch.contiguous_format
    noise = [torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=layout)
             .bernoulli_(keep, generator=g).div_(keep) for g in draws]
    return torch.stack(noise, dim)


def _linear(stacked: dict[str, Tensor], name: str, h: Tensor) -> Tensor:
    """h [K, in, B] -> [K, out, B]."""
    weight, bias = stacked[f"{name}.weight"], stacked.get(f"{name}.bias")
    if bias is None:
        return torch.bmm(weight, h)
    return torch.baddbmm(bias.unsqueeze(2), weight, h)


def _output(stacked: dict[str, Tensor], output: tuple[str, str, nn.Module], h: Tensor) -> Tensor:
    kind, name, module = output
    if kind == "heads":  # the active task's head (training uses one head at a time)
        return _linear(stacked, f"{name}.heads.{module.active}", h)
    h = _linear(stacked, name, h)
    if kind == "active" and module.masked:  # the classes not seen yet, masked
        h = h + module.mask.view(1, -1, 1)
    return h
