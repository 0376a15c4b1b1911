"""Recovery plans: a JSON round trip, refusal of another file, and an exact replay."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import recovery_core as rc
from recovery_core.plan import (
    CHOSEN,
    FOUND,
    UNVERIFIED,
    DataSettings,
    PlanError,
    RecoveryPlan,
    TrainingSettings,
    file_sha256,
    make_plan,
    recover_options,
    setting_state,
    unverified,
)
from recovery_core.recover import recover


@pytest.fixture()
def files(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))
    x = torch.randn(64, 6)
    with torch.no_grad():
        y = net(x) * 1.5 + 0.2
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    torch.save({"features": x, "answers": y}, tmp_path / "table.pt")
    return tmp_path / "weights.pt", tmp_path / "table.pt"


def _plan(spec: rc.ArchSpec, sha: str) -> RecoveryPlan:
    return make_plan(
        spec,
        sha,
        ["2"],
        TrainingSettings(method="adam", lr=0.01, epochs=3, batch_size=16, seed=5),
        DataSettings(("features",), "answers", "mse", name="table.pt"),
        checkpoint_name="weights.pt",
    )


def test_states_follow_where_a_value_came_from(files):
    spec = rc.infer_spec(rc.load_checkpoint(str(files[0])))
    free = spec.free
    if not free:  # the states still hold for any spec that has free settings
        pytest.skip("this spec has no free settings")
    name = free[0].name
    assert setting_state(spec.hyperparameter(name)) == UNVERIFIED
    assert name in unverified(spec)
    chosen = spec.with_values({name: free[0].candidates[-1]})
    assert setting_state(chosen.hyperparameter(name)) == CHOSEN
    found = spec.with_values({name: free[0].candidates[0]}, source="search")
    assert setting_state(found.hyperparameter(name)) == FOUND
    assert name not in unverified(found)


def test_a_plan_survives_json_and_refuses_another_checkpoint(files):
    spec = rc.infer_spec(rc.load_checkpoint(str(files[0])))
    plan = _plan(spec, file_sha256(files[0]))
    again = RecoveryPlan.from_json(plan.to_json())
    assert again == plan
    again.check_checkpoint(file_sha256(files[0]))
    with pytest.raises(PlanError, match="another checkpoint"):
        again.check_checkpoint(file_sha256(files[1]))


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        json.dumps({"format": "something else"}),
        json.dumps({"format": "model-recovery-plan", "version": 1}),
    ],
)
def test_a_file_that_is_not_a_plan_is_refused_in_a_sentence(text):
    with pytest.raises(PlanError):
        RecoveryPlan.from_json(text)


def test_replaying_a_plan_with_recover_gives_the_same_loss_as_training_directly(files, tmp_path):
    ckpt = rc.load_checkpoint(str(files[0]))
    spec = rc.infer_spec(ckpt)
    plan = RecoveryPlan.from_json(_plan(spec, file_sha256(files[0])).to_json())
    # What the dashboard does: a TrainingRun on the plan's model, layers and settings.
    model = rc.build_model(plan.apply(spec))
    rc.load_weights(model, ckpt.state_dict())
    data = rc.load_dataset(str(files[1]))
    mapping = rc.make_mapping(data, plan.data.inputs, plan.data.target, loss=plan.data.loss)
    inputs, target = rc.mapped_tensors(data, mapping)
    t = plan.training
    config = rc.TrainingConfig(
        method=t.method, lr=t.lr, epochs=t.epochs, batch_size=t.batch_size, seed=t.seed
    )
    direct = rc.TrainingRun(
        model, rc.plan_freeze(model, list(plan.trainable)), inputs, target,
        rc.loss_function(mapping), config,
    ).run()  # fmt: skip
    replayed = recover(
        str(files[0]), str(files[1]), str(tmp_path / "out" / "m.pt"), recover_options(plan)
    )
    assert replayed.search is None  # every setting was fixed: nothing searched again
    assert abs(replayed.training.final_loss - direct.final_loss) <= 1e-6


def test_the_command_line_replays_a_plan_with_held_out_data(files, tmp_path):
    from recovery_core import cli

    ckpt = rc.load_checkpoint(str(files[0]))
    spec = rc.infer_spec(ckpt)
    plan = make_plan(
        spec,
        file_sha256(files[0]),
        ["2"],
        TrainingSettings(
            method="adam", lr=0.01, epochs=3, batch_size=16, seed=2, val_fraction=0.25
        ),
        DataSettings(inputs=("features",), target="answers", loss="mse"),
    )
    path = tmp_path / "plan.json"
    path.write_text(plan.to_json())
    report = tmp_path / "report.json"
    argv = ["recover", str(files[0]), "--data", str(files[1]), "--plan", str(path)]
    assert cli.main([*argv, "--out", str(tmp_path / "a" / "m.pt"), "--report", str(report)]) == 0
    replayed = json.loads(report.read_text())["training"]["final_loss"]

    model = rc.build_model(plan.apply(spec))
    rc.load_weights(model, ckpt.state_dict())
    data = rc.load_dataset(str(files[1]))
    inputs, target = (data.tensors["features"],), data.tensors["answers"]
    config = rc.TrainingConfig(
        method="adam", lr=0.01, epochs=3, batch_size=16, seed=2, val_fraction=0.25
    )
    direct = rc.TrainingRun(
        model, rc.plan_freeze(model, ["2"]), inputs, target, rc.loss_function(
            rc.make_mapping(data, ("features",), "answers", loss="mse")), config,
    ).run()  # fmt: skip
    assert abs(replayed - direct.final_loss) <= 1e-6

    other = tmp_path / "other.pt"
    torch.save({k: v + 1 for k, v in ckpt.state_dict().items()}, other)
    argv = ["recover", str(other), "--data", str(files[1]), "--plan", str(path)]
    assert cli.main([*argv, "--out", str(tmp_path / "b" / "m.pt")]) == 2  # another file: refused
