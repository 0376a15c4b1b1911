"""Generated code: a standalone file a person can read, load and script."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from recovery_core.build import build_model, example_inputs, load_weights
from recovery_core.checkpoint import Checkpoint
from recovery_core.codegen import generate_code, hidden_arguments
from recovery_core.errors import BuildError
from recovery_core.infer import infer_spec
from recovery_core.spec import (
    SOURCE_DEFAULT,
    SOURCE_SEARCH,
    ArchSpec,
    Hyperparameter,
    ModelInput,
    ModuleSpec,
    Wiring,
)
from tests.zoo import ZOO, ZOO_BY_NAME, ZooCase

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),  # torch's fast-path notices
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
]


def inferred(case: ZooCase) -> tuple[dict[str, torch.Tensor], ArchSpec]:
    weights = case.make().state_dict()
    spec = infer_spec(Checkpoint.from_state_dict(weights))
    known = {hp.name for hp in spec.free}
    return weights, spec.with_values({k: v for k, v in case.hidden.items() if k in known})


def import_file(path: Path):
    """Import a generated file as a fresh module, the way a user would."""
    spec = importlib.util.spec_from_file_location(f"generated_{uuid.uuid4().hex}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("case", ZOO, ids=repr)
def test_generated_file_matches_the_built_model(case: ZooCase, tmp_path: Path):
    weights, spec = inferred(case)
    path = tmp_path / "model.py"
    path.write_text(generate_code(spec))

    model = import_file(path).RecoveredModel()
    model.load_state_dict(weights, strict=True)
    model.eval()

    assert type(model).__name__ == "RecoveredModel"
    if spec.wiring is None:
        return
    built = build_model(spec)
    load_weights(built, weights)
    built.eval()
    inputs = example_inputs(spec)
    with torch.no_grad():
        expected = built(*inputs)
        assert torch.equal(model(*inputs), expected)
        assert torch.equal(torch.jit.script(model)(*inputs), expected)


def test_generated_file_imports_only_torch_math_and_the_standard_library():
    _, spec = inferred(ZOO_BY_NAME["seq2seq_tutorial"])
    tree = ast.parse(generate_code(spec))

    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])

    assert imported <= {"torch", "math", "typing", "sys"}


def test_every_hidden_hyperparameter_is_a_commented_keyword_argument():
    spec = infer_spec(Checkpoint.from_state_dict(ZOO_BY_NAME["encoder_lm"].make().state_dict()))
    source = generate_code(spec)

    arguments = hidden_arguments(spec)

    assert {a.name for a in arguments} >= {"nhead", "batch_first", "norm_first", "activation"}
    for argument in arguments:
        line = next(x for x in source.splitlines() if x.strip().startswith(f"{argument.argument}:"))
        assert f"= {argument.value!r}".replace("'", '"') in line
        assert "# not determined by the weights; candidates:" in line


def test_values_chosen_by_search_say_so():
    _, spec = inferred(ZOO_BY_NAME["encoder_lm"])
    spec = spec.with_values({"nhead": 2}, source=SOURCE_SEARCH)

    line = next(x for x in generate_code(spec).splitlines() if x.strip().startswith("nhead:"))

    assert "nhead: int = 2," in line
    assert "chosen by search on data" in line


def test_main_block_strict_loads_a_weights_file(tmp_path: Path):
    weights, spec = inferred(ZOO_BY_NAME["mlp_no_bias"])
    (tmp_path / "model.py").write_text(generate_code(spec))
    torch.save(weights, tmp_path / "weights.pt")

    done = subprocess.run(
        [sys.executable, "model.py", "weights.pt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert "loaded 2 tensors" in done.stdout


def test_text_from_the_checkpoint_cannot_become_code():
    # A hostile value full of quotes and newlines must stay one string literal.
    hostile = 'relu"\nimport os; os.system("echo pwned")\n#'
    embedding = ModuleSpec("emb", "Embedding", {"num_embeddings": 5, "embedding_dim": 4})
    stack = ModuleSpec(
        "stack",
        "Unknown",
        hidden=("stack",),
    )
    hps = (
        Hyperparameter(
            name="stack", value=hostile, source=SOURCE_DEFAULT, evidence="line one\nimport os"
        ),
    )
    spec = ArchSpec(
        ModuleSpec("", "Module", children=(embedding, stack)),
        hps,
        Wiring("sequential", {}, (ModelInput("x", "long", (2, 3)),), "x -> stack"),
    )

    tree = ast.parse(generate_code(spec))

    calls = [
        n.func.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
    ]
    assert "system" not in calls
    defaults = [
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value == hostile
    ]
    assert defaults == [hostile]


def test_a_spec_that_cannot_be_built_raises_a_build_error():
    spec = ArchSpec(ModuleSpec("", "Module", children=(ModuleSpec("x", "Frobnicator"),)), (), None)
    with pytest.raises(BuildError, match="cannot be rebuilt"):
        generate_code(spec)
