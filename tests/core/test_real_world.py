"""Real-world architectures round-trip: every tensor listed, rebuilt, strict-loaded, typed.

For each model of tests/real_world_zoo.py (Hugging Face models built from configs,
faithful timm/torchvision layouts, the leaf cases of issue 10):
- inspect lists every tensor, with the role torch registered it under;
- the generated model strict-loads with bit-equal values and equal dtypes;
- its parameters and buffers are the original's, by name and count;
- every leaf with tensors of its own has its torch.nn type, or shows that type as the
  runner-up beside a note saying why the shapes are ambiguous.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recovery_core.infer import infer_spec
from recovery_core.infer.registry import TYPES
from recovery_core.inspect import describe
from recovery_core.io.checkpoint import Checkpoint
from recovery_core.model.build import build_model
from recovery_core.model.spec import ArchSpec
from tests.real_world_zoo import HAVE_TRANSFORMERS, REAL_WORLD, RealCase

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

# Classes outside torch.nn whose layer type we model under another name.
EQUIVALENT = {"Conv1D": "HFConv1D"}  # transformers.pytorch_utils.Conv1D


def torch_type(module: nn.Module) -> str | None:
    """The torch.nn class a module is (through subclasses), or our name for a known
    outside class; None for a library's own container or custom layer."""
    for cls in type(module).__mro__:
        if cls is nn.Module:
            break
        if getattr(nn, cls.__name__, None) is cls:
            return cls.__name__
    return EQUIVALENT.get(type(module).__name__)


def own_tensors(module: nn.Module, state: dict) -> set[str]:
    names = [n for n, _ in module.named_parameters(recurse=False)]
    names += [n for n, _ in module.named_buffers(recurse=False)]
    return set(names)


def check_types(original: nn.Module, spec: ArchSpec, state: dict) -> list[str]:
    """Leaves whose type is neither right nor an honest runner-up."""
    wrong = []
    for path, module in original.named_modules(remove_duplicate=False):
        if "parametrizations" in path.split("."):
            continue  # weight norm's own bookkeeping: checked through its owner
        own = {n for n in own_tensors(module, state) if (f"{path}.{n}" if path else n) in state}
        if not own and not (hasattr(module, "parametrizations") or hasattr(module, "weight_g")):
            continue
        found = spec.module(path)
        expected = torch_type(module)
        if expected in (None, "Sequential", "ModuleList", "ModuleDict"):
            kept = {t.name for t in found.kept}
            if expected is not None and not own <= kept:
                wrong.append(f"{path}: {sorted(own - kept)} not kept as is")
            continue
        honest = expected in found.alternatives and bool(found.note)
        if found.type != expected and not honest:
            wrong.append(
                f"{path or '(root)'}: {found.type} (alternatives {found.alternatives}), not {expected}"
            )
    return wrong


@pytest.mark.parametrize("case", REAL_WORLD, ids=repr)
def test_a_real_world_architecture_rebuilds_exactly(case: RealCase):
    if case.needs_transformers and not HAVE_TRANSFORMERS:
        pytest.skip("transformers is a test-only extra (pip install -e '.[dev]')")
    if case.name == "prelu_cnn" and "PReLU" not in TYPES:
        pytest.skip("no PReLU family is registered")
    original = case.make()
    state = original.state_dict()
    checkpoint = Checkpoint.from_state_dict(state)
    spec = infer_spec(checkpoint)
    inspection = describe(checkpoint, spec)

    assert [row.name for row in inspection.rows] == list(state)
    parameters = dict(original.named_parameters(remove_duplicate=False))
    buffers = {n for n, _ in original.named_buffers(remove_duplicate=False) if n in state}
    roles = {row.name: row.role for row in inspection.rows}
    assert {k for k, role in roles.items() if role == "buffer"} == buffers
    assert {k for k, role in roles.items() if role == "parameter"} == set(parameters)
    assert inspection.parameter_count == sum(p.numel() for p in original.parameters())
    for path, module in original.named_modules():
        expected = sum(p.numel() for p in module.parameters())
        if "parametrizations" not in path.split(".") and expected:
            assert inspection.module_parameter_count(spec.module(path)) == expected, path

    model = build_model(spec)
    model.load_state_dict(state, strict=True)
    rebuilt = model.state_dict()
    assert set(rebuilt) == set(state)
    for key, value in state.items():
        assert rebuilt[key].dtype == value.dtype and torch.equal(rebuilt[key], value), key
    assert set(dict(model.named_parameters(remove_duplicate=False))) == set(parameters)
    # tied weights are shared again: the same number of distinct parameters
    assert len(list(model.parameters())) == len(list(original.parameters()))
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in original.parameters()
    )
    assert {n for n, _ in model.named_buffers() if n in rebuilt} == buffers

    assert check_types(original, spec, state) == []


def test_the_zoo_is_large_enough():
    assert len(REAL_WORLD) >= 25
