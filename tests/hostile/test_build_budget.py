"""Rebuild and example-forward budgets use declared sizes (meta and zero-stride tensors
count in full) and refuse before anything is allocated."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from recovery_core.errors import LimitExceededError
from recovery_core.io.checkpoint import load_checkpoint
from recovery_core.model.budget import BuildLimits, check_build_budget, check_example_budget
from tests.hostile import _payloads as p


@pytest.mark.parametrize("kind", ["meta", "zero-stride"])
def test_a_tiny_file_declaring_a_huge_linear_is_not_rebuilt(tmp_path, kind) -> None:
    n = 23_000
    weight = torch.empty(n, n, device="meta") if kind == "meta" else torch.zeros(1, 1).expand(n, n)
    path = p.torch_zip(tmp_path / "huge.pt", {"weight": weight, "bias": torch.zeros(n)})
    assert path.stat().st_size < 200_000
    checkpoint = load_checkpoint(path)
    with pytest.raises(LimitExceededError) as info:
        check_build_budget(checkpoint)
    assert info.value.limit == "max_build_bytes" and "(max_build_bytes)" in str(info.value)


def test_a_huge_dimension_with_no_bytes_is_refused(tmp_path) -> None:
    path = tmp_path / "empty.safetensors"
    save_file({"weight": torch.zeros(250_000_000, 0), "bias": torch.zeros(4)}, path)
    with pytest.raises(LimitExceededError) as info:
        check_build_budget(load_checkpoint(path))
    assert info.value.limit == "max_dimension"
    with pytest.raises(LimitExceededError):
        check_example_budget([(2, 250_000_000)])


def test_ordinary_models_pass(tmp_path) -> None:
    check_build_budget(load_checkpoint(p.torch_zip(tmp_path / "m.pt", p.small_state_dict())))
    check_example_budget([(4, 16), (4, 16)])
    with pytest.raises(LimitExceededError) as info:
        check_example_budget([(1024, 1024, 64)], limits=BuildLimits(max_example_bytes=2**20))
    assert info.value.limit == "max_example_bytes"
