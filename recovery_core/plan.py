"""A recovery plan: every choice a recovery made, as one JSON file that replays it exactly.

The dashboard writes one ("save recovery plan"); `recovery recover --plan plan.json`, or
another dashboard session, replays it. It names the checkpoint by its SHA-256 (a plan is
refused on any other file), and holds every free setting with the state it was in, the
wiring, what trains, the training settings and the data mapping.

The state of a free setting is the one truth the dashboard shows on every page:
- "found": chosen by scoring the candidates on data,
- "chosen": set by the person,
- "unverified": the usual default; nothing checked it against the data.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from recovery_core.errors import RecoveryError
from recovery_core.model.spec import (
    SOURCE_DEFAULT,
    SOURCE_SEARCH,
    SOURCE_USER,
    ArchSpec,
    Hyperparameter,
    Source,
)

FORMAT = "model-recovery-plan"
VERSION = 1
MAX_PLAN_BYTES = 1 << 20  # a plan is a few KB; anything this big is not one

FOUND, CHOSEN, UNVERIFIED = "found", "chosen", "unverified"
STATE_WORDS = {
    FOUND: "found on your data",
    CHOSEN: "chosen by you",
    UNVERIFIED: "unverified default",
}


class PlanError(RecoveryError):
    """A plan file that cannot be read, or that belongs to another checkpoint."""


def setting_state(hp: Hyperparameter) -> str | None:
    """FOUND, CHOSEN or UNVERIFIED for a free setting; None for one the weights fix."""
    if hp.determined:
        return None
    if hp.source == SOURCE_SEARCH:
        return FOUND
    if hp.source == SOURCE_USER:
        return CHOSEN
    return UNVERIFIED  # the usual default, or anything else nobody checked


def unverified(spec: ArchSpec) -> tuple[str, ...]:
    """Names of the free settings nothing has checked (a model built on them may be wrong)."""
    return tuple(hp.name for hp in spec.free if setting_state(hp) == UNVERIFIED)


def settings_report(spec: ArchSpec) -> list[dict[str, Any]]:
    """Each free setting with its value and state, for reports."""
    return [{"name": hp.name, "value": hp.value, "state": setting_state(hp)} for hp in spec.free]


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


if TYPE_CHECKING:  # the training run imports torch; a plan needs only the names
    from recovery_core.fit.train import Method, TrainingConfig


@dataclass(frozen=True)
class TrainingSettings:
    method: Method = "auto"
    lr: float = 1e-3
    epochs: int = 20
    batch_size: int = 32
    seed: int = 0
    val_fraction: float = 0.0  # held out for evaluation; 0: evaluated on the training data

    def config(
        self,
        *,
        device: str = "auto",
        val_fraction: float | None = None,
        samples_independent: bool = True,
    ) -> TrainingConfig:
        """The run's configuration (checked there): these settings, on `device`; the part
        held out may be narrowed by the caller (0 when the data is too small to split);
        `samples_independent`: the data's layout (`BatchDims.independent`)."""
        from recovery_core.fit.train import TrainingConfig

        held_out = self.val_fraction if val_fraction is None else val_fraction
        return TrainingConfig(
            **{**asdict(self), "val_fraction": held_out},
            device=device,
            samples_independent=samples_independent,
        )


@dataclass(frozen=True)
class DataSettings:
    inputs: tuple[str, ...]
    target: str
    loss: str  # "mse" or "cross_entropy"
    name: str | None = None  # the dataset's file name, as a label only


@dataclass(frozen=True)
class RecoveryPlan:
    checkpoint_sha256: str
    settings: Mapping[str, Any]  # every free setting's value
    states: Mapping[str, str]  # name -> FOUND / CHOSEN / UNVERIFIED when saved
    trainable: tuple[str, ...]  # module paths that train; everything else stays frozen
    training: TrainingSettings
    data: DataSettings | None
    wiring: str | None = None  # the data flow the settings were chosen with, as described
    checkpoint_name: str | None = None  # a label only; the hash decides
    format: str = field(default=FORMAT)
    version: int = field(default=VERSION)

    def to_json(self) -> str:
        body = asdict(self)
        body["settings"] = dict(self.settings)
        body["states"] = dict(self.states)
        return json.dumps(body, indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> RecoveryPlan:
        if len(text) > MAX_PLAN_BYTES:
            raise PlanError(
                "This file is too big to be a recovery plan; choose the plan's .json file."
            )
        try:
            body = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PlanError(f"This is not a recovery plan: it is not valid JSON ({exc}).") from exc
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise PlanError("This JSON file is not a recovery plan; choose a file saved as one.")
        if body.get("version") != VERSION:
            raise PlanError(
                f"This plan has version {body.get('version')!r}; this program reads version {VERSION}."
            )
        try:
            data = body.get("data")
            return cls(
                checkpoint_sha256=_text(body["checkpoint_sha256"]),
                settings=_plain_mapping(body["settings"]),
                states={str(k): _text(v) for k, v in dict(body["states"]).items()},
                trainable=tuple(_text(p) for p in body["trainable"]),
                training=_training(body["training"]),
                data=None
                if data is None
                else DataSettings(
                    inputs=tuple(_text(n) for n in data["inputs"]),
                    target=_text(data["target"]),
                    loss=_text(data["loss"]),
                    name=data.get("name"),
                ),
                wiring=body.get("wiring"),
                checkpoint_name=body.get("checkpoint_name"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"This recovery plan is incomplete or damaged ({exc!r}).") from exc

    def check_checkpoint(self, sha256: str) -> None:
        """Refuse a plan made for another file: its settings would describe other weights."""
        if sha256 != self.checkpoint_sha256:
            name = f" ({self.checkpoint_name})" if self.checkpoint_name else ""
            raise PlanError(
                f"This plan was made for another checkpoint{name}: its SHA-256 begins "
                f"{self.checkpoint_sha256[:12]}, this file's {sha256[:12]}. Open that checkpoint."
            )

    def apply(self, spec: ArchSpec) -> ArchSpec:
        """The spec with the plan's settings; each keeps the state it was saved in."""
        by_state: dict[str, dict[str, Any]] = {}
        for name, value in self.settings.items():
            by_state.setdefault(self.states.get(name, CHOSEN), {})[name] = value
        sources: dict[str, Source] = {
            FOUND: SOURCE_SEARCH,
            CHOSEN: SOURCE_USER,
            UNVERIFIED: SOURCE_DEFAULT,
        }
        for state, values in by_state.items():
            spec = spec.with_values(values, source=sources.get(state, SOURCE_USER))
        return spec


def make_plan(
    spec: ArchSpec,
    checkpoint_sha256: str,
    trainable: tuple[str, ...] | list[str],
    training: TrainingSettings,
    data: DataSettings | None,
    checkpoint_name: str | None = None,
) -> RecoveryPlan:
    free = spec.free
    return RecoveryPlan(
        checkpoint_sha256=checkpoint_sha256,
        settings={hp.name: hp.value for hp in free},
        states={hp.name: setting_state(hp) or CHOSEN for hp in free},
        trainable=tuple(sorted(trainable)),
        training=training,
        data=data,
        wiring=spec.wiring.description if spec.wiring is not None else None,
        checkpoint_name=checkpoint_name,
    )


def recover_options(plan: RecoveryPlan, **overrides: Any) -> Any:
    """The `RecoverOptions` that replay this plan: every setting fixed (nothing is
    searched again), the same layers, training settings, seed and data mapping."""
    from recovery_core.recover import RecoverOptions  # recover imports much; only load it here

    values: dict[str, Any] = {
        "fixed": dict(plan.settings),
        "unfreeze": plan.trainable,
        **asdict(plan.training),  # method, lr, epochs, batch size, seed, part held out
    }
    if plan.data is not None:
        values.update(inputs=plan.data.inputs, target=plan.data.target, loss=plan.data.loss)
    known = {f.name for f in fields(RecoverOptions)}
    values.update(overrides)
    return RecoverOptions(**{k: v for k, v in values.items() if k in known})


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _plain_mapping(value: Any) -> dict[str, Any]:
    out = {}
    for k, v in dict(value).items():
        if not isinstance(v, (str, int, float, bool)) and v is not None:
            raise TypeError(f"setting {k!r} has a value of type {type(v).__name__}")
        out[str(k)] = v
    return out


def _training(value: Any) -> TrainingSettings:
    body = dict(value)
    settings = TrainingSettings(
        method=cast("Method", _text(body["method"])),  # TrainingConfig checks it
        lr=float(body["lr"]),
        epochs=int(body["epochs"]),
        batch_size=int(body["batch_size"]),
        seed=int(body.get("seed", 0)),
        val_fraction=float(body.get("val_fraction", 0.0)),
    )
    if not (math.isfinite(settings.lr) and settings.lr > 0):
        raise ValueError(f"learning rate {settings.lr}")
    return settings


__all__ = [
    "CHOSEN",
    "FOUND",
    "STATE_WORDS",
    "UNVERIFIED",
    "DataSettings",
    "PlanError",
    "RecoveryPlan",
    "TrainingSettings",
    "file_sha256",
    "make_plan",
    "recover_options",
    "settings_report",
    "setting_state",
    "unverified",
]
