"""Generated code: a standalone file a person can read, load and script."""

from __future__ import annotations

import ast
import copy
import dataclasses
import importlib.util
import os
import pickle
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from torch import nn

from recovery_core.errors import BuildError
from recovery_core.infer import infer_spec
from recovery_core.io.checkpoint import Checkpoint
from recovery_core.model import codegen_names
from recovery_core.model.build import build_model, example_inputs, load_weights
from recovery_core.model.codegen import generate_code, hidden_arguments
from recovery_core.model.spec import (
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
    embedding = ModuleSpec(
        path="emb", type="Embedding", args={"num_embeddings": 5, "embedding_dim": 4}
    )
    stack = ModuleSpec(path="stack", type="Unknown", hidden=("stack",))
    hps = (
        Hyperparameter(
            name="stack", value=hostile, source=SOURCE_DEFAULT, evidence="line one\nimport os"
        ),
    )
    spec = ArchSpec(
        root=ModuleSpec(path="", type="Module", children=(embedding, stack)),
        hyperparameters=hps,
        wiring=Wiring(
            kind="sequential",
            roles={},
            inputs=(ModelInput(name="x", dtype="long", shape=(2, 3)),),
            description="x -> stack",
        ),
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


HOSTILE = ("self", "class", "__import__", "x;import os", "²", "ñ", "nn", "torch")


def hostile_model(nested: bool = True) -> nn.Module:
    """Children named after `self`, a keyword, a builtin, a statement, a Unicode digit,
    a non-ASCII letter and the generated file's own globals; nested: also a container
    holding `²` (the key net.².weight) and a parameter-free slot under `ñ2`."""
    model = nn.Module()
    for name in HOSTILE:
        model._modules[name] = nn.Linear(4, 4)
    if nested:
        model._modules["net"] = nn.Module()
        model.net._modules["²"] = nn.Linear(4, 4)
        model._modules["ñ2"] = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    return model


def identifiers(source: str) -> set[str]:
    """Every name the code binds, reads, sets as an attribute or passes as a keyword."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.arg):
            found.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            found.add(node.name)
        elif isinstance(node, ast.keyword) and node.arg is not None:
            found.add(node.arg)
        elif isinstance(node, ast.alias):
            found.add(node.asname or node.name)
    return found


def assert_only_literals(source: str) -> None:
    """No hostile name is code: each is at most a string constant."""
    names = identifiers(source)
    assert all(n.isascii() and n.isidentifier() for n in names)
    assert not names & {"class", "__import__", "x;import os", "²", "ñ", "ñ2", "os"}
    strings = {n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant)}
    assert {"class", "__import__", "x;import os", "²", "ñ"} <= strings


def test_hostile_names_never_become_code():
    state = hostile_model().state_dict()
    spec = infer_spec(Checkpoint.from_state_dict(state))
    assert_only_literals(generate_code(spec))
    build_model(spec).load_state_dict(state, strict=True)


def test_a_stack_of_hostile_names_runs_and_scripts():
    original = hostile_model(nested=False)
    state = original.state_dict()
    # "x;import os" is not a name: the forward calls it `x` instead.
    inputs = (ModelInput(name="x;import os", dtype="float", shape=(2, 4)),)
    stack = Wiring(kind="sequential", roles={}, inputs=inputs, description="each child in order")
    spec = dataclasses.replace(infer_spec(Checkpoint.from_state_dict(state)), wiring=stack)
    source = generate_code(spec)
    assert_only_literals(source)
    assert "def forward(self, x: Tensor)" in source
    model = build_model(spec)
    model.load_state_dict(state, strict=True)
    x = torch.randn(2, 4)
    expected = x
    for name in HOSTILE:
        expected = original.get_submodule(name)(expected)
    with torch.no_grad():
        assert torch.allclose(model(x), expected)
        assert torch.allclose(torch.jit.script(model)(x), expected)


def test_names_come_only_from_the_ascii_strict_factory():
    identifier, attribute = codegen_names.identifier, codegen_names.attribute
    argument = codegen_names.argument
    with pytest.raises(TypeError):
        codegen_names.Name("x")  # no Name without the factory
    for bad in ("ñ", "x²", "class", "__import__", "x;import os", "", "a.b"):
        with pytest.raises(BuildError):
            identifier(bad, "the name")
        assert attribute(bad) is None
    assert identifier("in_features", "the keyword") == "in_features"
    assert attribute("self") == "self" and attribute("forward") is None
    assert argument("nn", set()) == "nn_"  # never shadows what the constructor reads
    assert argument("ñ.1", set()) == "module__1"
    assert argument("net.1", {"net_1"}) == "net_1_1"
    with pytest.raises(TypeError):
        codegen_names.keyword_argument("in_features", "4")  # type: ignore[arg-type]
    name = identifier("nhead", "the name")
    for copied in (copy.deepcopy(name), pickle.loads(pickle.dumps(name))):
        assert copied == "nhead" and isinstance(copied, codegen_names.Name)


def test_the_same_spec_gives_the_same_file_in_every_process():
    """Generated code does not depend on the process's string hashing (set order)."""
    code = (
        "from recovery_core.io.checkpoint import Checkpoint\n"
        "from recovery_core.model.codegen import generate_code\n"
        "from recovery_core.infer import infer_spec\n"
        "from tests.forward_zoo import FORWARD_BY_NAME\n"
        "model = FORWARD_BY_NAME['vector_seq2seq_fed_as_is'].make()\n"
        "print(generate_code(infer_spec(Checkpoint.from_state_dict(model.state_dict()))))\n"
    )
    files = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "3")
    }  # fmt: skip
    assert len(files) == 1
