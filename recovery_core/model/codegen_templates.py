"""The fixed text of a generated file: its header, the helpers it may need, its main.

Nothing here depends on a checkpoint; `codegen` picks which helpers a model needs.
"""

HEADER = '''
"""A model recovered from a bare state dict by Model Recovery Studio.

Attribute names match the checkpoint's keys, so `load_state_dict(weights)` is strict.
Keyword arguments marked "not determined by the weights" are guesses or were chosen by
scoring candidates on data: the weights alone cannot tell them apart.
"""

import math
from typing import Any, Optional

import torch
from torch import Tensor, nn
'''

PARAMETER_FREE_HELPER = """
# Layers without weights leave no keys, so the checkpoint only shows that one was there.
PARAMETER_FREE_LAYERS = {
    "ReLU": nn.ReLU,
    "GELU": nn.GELU,
    "Tanh": nn.Tanh,
    "Sigmoid": nn.Sigmoid,
    "Identity": nn.Identity,
    "Dropout": nn.Dropout,
    "Flatten": nn.Flatten,
    "MaxPool1d": lambda: nn.MaxPool1d(2),
    "MaxPool2d": lambda: nn.MaxPool2d(2),
    "MaxPool3d": lambda: nn.MaxPool3d(2),
    "AvgPool1d": lambda: nn.AvgPool1d(2),
    "AvgPool2d": lambda: nn.AvgPool2d(2),
    "AvgPool3d": lambda: nn.AvgPool3d(2),
}


POOLS = {
    "MaxPool1d": nn.MaxPool1d,
    "MaxPool2d": nn.MaxPool2d,
    "MaxPool3d": nn.MaxPool3d,
    "AvgPool1d": nn.AvgPool1d,
    "AvgPool2d": nn.AvgPool2d,
    "AvgPool3d": nn.AvgPool3d,
}


ADAPTIVE_POOLS = {
    "AdaptiveAvgPool1d": nn.AdaptiveAvgPool1d,
    "AdaptiveAvgPool2d": nn.AdaptiveAvgPool2d,
    "AdaptiveAvgPool3d": nn.AdaptiveAvgPool3d,
}


def parameter_free_layer(name: str) -> nn.Module:
    # A fresh module for a parameter-less slot: "MaxPool2d" pools with kernel 2, stride 2;
    # "MaxPool2d(3, 2, 1)" with kernel 3, stride 2, padding 1 ("MaxPool2d(3)": stride 3);
    # "AdaptiveAvgPool2d(4)" pools to 4 x 4, whatever the input size.
    if name.endswith("+Flatten"):
        return nn.Sequential(parameter_free_layer(name[: -len("+Flatten")]), nn.Flatten())
    if name.endswith(")"):
        kind, numbers = name[:-1].split("(")
        if kind in ADAPTIVE_POOLS:
            return ADAPTIVE_POOLS[kind](int(numbers))
        return POOLS[kind](*(int(n) for n in numbers.split(",")))
    return PARAMETER_FREE_LAYERS[name]()
"""

PADDING_HELPER = '''
def padding_for(kernel_size: tuple, mode: Any, dilation: int = 1) -> Any:
    """"same" pads dilation * (k // 2) on each side (the size stays at stride 1 for an odd
    kernel), "valid" pads nothing; a number is used as it is."""
    if mode == "same":
        return tuple(dilation * (k // 2) for k in kernel_size)
    if mode == "valid":
        return 0
    return mode
'''

REGISTER_HELPER = '''
def register(owner: nn.Module, name: str, value: Any) -> None:
    """Adds a child, parameter or buffer under the checkpoint's own name, even one that is
    not a Python name (`self`, `class`, `²`) or that nn.Module also uses (`forward`), so
    every state-dict key stays exactly as the checkpoint spells it."""
    if isinstance(value, nn.Module):
        table = owner._modules
    elif isinstance(value, nn.Parameter):
        table = owner._parameters
    else:
        table = owner._buffers
    if hasattr(type(owner), name):  # a method's name: add_module and friends refuse it
        table[name] = value
    elif isinstance(value, nn.Module):
        owner.add_module(name, value)
    elif isinstance(value, nn.Parameter):
        owner.register_parameter(name, value)
    else:
        owner.register_buffer(name, value)
'''

CONTAINER_HELPER = '''
class Container(nn.Module):
    """Holds named submodules as the original model did; it is never called itself."""

    def __init__(self, /, **children: nn.Module) -> None:
        super().__init__()
        for name, child in children.items():
            register(self, name, child)
'''

TIE_HELPER = '''
def tie(owner: nn.Module, key: str, source: str) -> None:
    """Makes `key` the very parameter at `source`, as the checkpoint stored them once
    (a decoder reusing its embedding table): training updates both together."""
    parameters = dict(owner.named_parameters(remove_duplicate=False))
    shared, own = parameters.get(source), parameters.get(key)
    if shared is None or own is None or shared.shape != own.shape:
        return  # a buffer, or shapes that differ: nothing to share
    module, _, name = key.rpartition(".")
    register(owner.get_submodule(module), name, shared)
'''

KEPT_HELPER = '''
def kept(owner: nn.Module, tensors: list) -> nn.Module:
    """Registers tensors no known layer type explains under their names and shapes;
    load_state_dict fills in their values. Integer and boolean ones are buffers."""
    for kind, name, shape, dtype in tensors:
        value = torch.zeros(shape, dtype=dtype)
        if kind == "parameter":
            value = nn.Parameter(value, requires_grad=value.is_floating_point())
        register(owner, name, value)
    return owner
'''


MAIN = """
if __name__ == "__main__":
    import sys

    model = RecoveredModel()
    weights = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
    model.load_state_dict(weights)  # strict: every key and shape must match
    model.eval()
    print(f"RecoveredModel loaded {len(weights)} tensors from {sys.argv[1]}")
"""
