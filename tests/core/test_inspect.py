"""The key/shape table and layer tree: roles and counts as torch.nn itself registers them."""

from __future__ import annotations

import pytest
import torch

from recovery_core.inspect import describe
from recovery_core.io.checkpoint import Checkpoint
from tests.zoo import ZOO


@pytest.mark.parametrize("case", ZOO, ids=lambda c: c.name)
def test_parameter_and_buffer_roles_match_the_real_module(case):
    model = case.make()
    inspection = describe(Checkpoint.from_state_dict(model.state_dict()))
    buffers = {name for name, _ in model.named_buffers()}
    roles = {row.name: row.role for row in inspection.rows}
    assert {k for k, role in roles.items() if role == "buffer"} == buffers
    assert inspection.parameter_count == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("case", ZOO, ids=lambda c: c.name)
def test_each_module_counts_the_parameters_beneath_it(case):
    model = case.make()
    inspection = describe(Checkpoint.from_state_dict(model.state_dict()))
    real = dict(model.named_modules())
    for module in inspection.spec.modules():
        if module.path in real:
            expected = sum(p.numel() for p in real[module.path].parameters())
            assert inspection.module_parameter_count(module) == expected, module.path


def test_keys_no_layer_explains_are_rows_kept_as_is_with_their_role_and_why():
    state = {
        "0.weight": torch.zeros(3, 4),
        "mystery": torch.zeros(2, 2, 2, 2, 2, 2),
        "position_index": torch.zeros(4, 4, dtype=torch.int64),
    }
    inspection = describe(Checkpoint.from_state_dict(state))
    rows = {r.name: r for r in inspection.rows}
    assert rows["mystery"].kept and rows["mystery"].role == "parameter"
    assert rows["position_index"].kept and rows["position_index"].role == "buffer"
    assert "int64" in rows["position_index"].why
    assert not rows["0.weight"].kept
    # buffers kept as is are not parameters
    assert inspection.parameter_count == 3 * 4 + 2**6
    text = inspection.to_text()
    assert "KEPT AS IS" in text and "mystery: kept as is, parameter" in text


@pytest.mark.parametrize("name", ["encoder_decoder_modules", "cnn_batchnorm2d", "embedding_lstm"])
def test_the_layer_tree_lists_modules_in_definition_order_indented_by_depth(name):
    """Paths read back from the tree's indentation follow torch's own `named_modules`."""
    from tests.zoo import ZOO_BY_NAME

    model = ZOO_BY_NAME[name].make()
    lines = describe(Checkpoint.from_state_dict(model.state_dict())).to_text().splitlines()
    tree = lines[lines.index("LAYER TREE") + 1 : lines.index("HYPERPARAMETERS") - 1]
    stack: list[str] = []
    paths = []
    for line in tree:
        if ": kept as is," in line:
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        stack[depth:] = [line.strip().split(":")[0]]
        paths.append(".".join(stack[1:]))
    real = [path for path, _ in model.named_modules()]
    assert len(paths) == len(set(paths)) and paths[0] == ""
    assert [p for p in paths if p in real] == [p for p in real if p in paths]
    assert len([p for p in paths if p in real]) > 3
