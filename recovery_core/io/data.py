"""Load a dataset safely, guess and validate the input/target mapping, choose the loss.

A dataset is a set of named tensors that agree on dimension 0 (the samples). Files are
untrusted: torch files are read with the weights-only unpickler (plus, for a pickled
`TensorDataset`, that one class), numpy files with `allow_pickle=False`, and nothing
from a file is ever run.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from recovery_core.errors import DataError, RecoveryError
from recovery_core.fit.freeze import eval_mode
from recovery_core.io.container import check_safetensors_header
from recovery_core.io.data_file import CheckedFile, check_in_child, check_records, file_format
from recovery_core.io.limits import LoadLimits
from recovery_core.model.spec import ModelInput

# The losses by name; the names appear in the CLI, plans and reports: a contract.
LossName = Literal["mse", "cross_entropy"]
LOSSES: tuple[LossName, ...] = get_args(LossName)

# Names tried in order when guessing which entry is the target. For an encoder-decoder
# model `tgt` is the decoder's *input*; its shifted copy (`tgt_out`, `tgt_y`) is the target.
TARGET_NAMES = (
    "target",
    "targets",
    "y",
    "labels",
    "label",
    "tgt_out",
    "tgt_y",
    "outputs",
    "output",
)

# Bound the work on untrusted files (entries; the zip members' bounds: data_file.py).
MAX_ENTRIES = 1_000


@dataclass(frozen=True)
class Dataset:
    """Named tensors with samples along dimension 0."""

    tensors: dict[str, Tensor]  # in file order
    source_name: str
    format: str  # "torch-dict", "torch-sequence", "torch-tensordataset", "safetensors", "npz"
    n_samples: int
    warnings: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.tensors)

    def describe(self) -> dict[str, str]:
        """name -> "int64 (256, 12)", for tables and messages."""
        return {k: _describe(t) for k, t in self.tensors.items()}


@dataclass(frozen=True)
class DataMapping:
    """Which dataset entries feed the model's forward arguments, which is the target."""

    inputs: tuple[str, ...]
    target: str
    loss: LossName
    reason: str  # how it was guessed (or "chosen by the user")


@dataclass(frozen=True)
class LossFunction:
    """A callable loss that also says which one it is (training picks the closed form by it)."""

    name: LossName

    def __call__(self, output: Tensor, target: Tensor) -> Tensor:
        if self.name == "cross_entropy":
            # Sequence outputs (N, T, C) against targets (N, T): one class per position.
            if output.dim() > 2:
                return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))
            return F.cross_entropy(output, target.reshape(-1))
        if output.shape != target.shape:
            if output.numel() != target.numel():
                raise DataError(
                    f"The model's output has shape {tuple(output.shape)} but the target has "
                    f"shape {tuple(target.shape)}; choose a target that matches the output."
                )
            target = target.reshape(output.shape)  # (N,) against (N, 1) and the like
        return F.mse_loss(output, target.to(output.dtype))


# ---------------------------------------------------------------- loading


def load_dataset(
    source: str | PathLike[str] | bytes,
    *,
    name: str | None = None,
    checked: CheckedFile | None = None,
) -> Dataset:
    """Read a dataset file (or uploaded bytes) into named tensors.

    Accepts a torch-saved dict of tensors, a tuple/list `(inputs..., target)`, a pickled
    `TensorDataset`, a `.safetensors` file or a `.npz` file; the format is sniffed from
    the content, not the name. `checked`: the file's checks already passed before torch
    was loaded (`data_file.check_before_torch`); they are not run again while the path
    still names that file, unchanged.
    """
    if isinstance(source, bytes):
        with _private_copy(source) as path:
            return load_dataset(path, name=name or "uploaded dataset")
    path = os.fspath(source)
    display = name or os.path.basename(path)
    if checked is not None and checked.still_names(path):
        fmt = checked.format
    else:
        fmt, checked = file_format(path, display), None
    if fmt == "npz":
        tensors = _read_npz(path, display)
    elif fmt == "safetensors":
        tensors = _read_safetensors(path, display)
    else:
        fmt, tensors = _read_torch(path, display, checked=checked is not None)
    return _make_dataset(tensors, display, fmt)


@contextlib.contextmanager
def _private_copy(data: bytes) -> Iterator[str]:
    """Uploaded bytes in a private temporary folder under a generated name."""
    with tempfile.TemporaryDirectory(prefix="recovery-data-") as folder:
        path = os.path.join(folder, "upload.bin")
        with open(path, "wb") as f:
            f.write(data)
        yield path


def _read_npz(path: str, display: str) -> dict[str, Tensor]:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return {k: torch.from_numpy(np.ascontiguousarray(arrays[k])) for k in arrays.files}
    except ValueError as e:  # object arrays need pickle: refused
        raise DataError(f"{display} holds arrays numpy can only read with pickle ({e}).") from None
    except Exception as e:  # noqa: BLE001 - numpy and zipfile raise many types on bad files
        raise DataError(
            f"{display} could not be read as a .npz file ({type(e).__name__})."
        ) from None


def _read_safetensors(path: str, display: str) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        check_safetensors_header(Path(path), display, LoadLimits())  # bounded JSON first
        return load_file(path)
    except RecoveryError as e:
        raise DataError(str(e)) from None
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(f"{display} could not be read as a safetensors file ({e}).") from None


def _read_torch(path: str, display: str, *, checked: bool = False) -> tuple[str, dict[str, Tensor]]:
    # The same checks as a checkpoint's, in the killable, limited child: records, the
    # pickle scan (no uninitialised-memory constructors) and torch's own parse on the
    # meta device (unless they passed before torch was loaded: `checked`). Only a file
    # that passed is unpickled here, onto the CPU.
    if not checked:
        check_in_child(check_torch_dataset, path, display)
    try:
        # Only TensorDataset is allowed beyond plain tensors and containers.
        with torch.serialization.safe_globals([TensorDataset]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler raises many types; the message is what matters
        first_line = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise DataError(
            f"{display} could not be loaded safely: it must hold only tensors (a dict, a "
            f"tuple or a TensorDataset); the loader said: {first_line[:200]}"
        ) from None
    if isinstance(obj, TensorDataset):
        return "torch-tensordataset", _from_sequence(obj.tensors, display)
    if isinstance(obj, Mapping):
        return "torch-dict", _from_mapping(obj, display)
    if isinstance(obj, (tuple, list)):
        return "torch-sequence", _from_sequence(obj, display)
    if isinstance(obj, Tensor):
        raise DataError(
            f"{display} holds a single tensor; save inputs and target together, e.g. "
            "torch.save({'x': x, 'y': y}, path)."
        )
    raise DataError(f"{display} holds a {type(obj).__name__}, not a dict or tuple of tensors.")


def check_torch_dataset(path: str, display: str, limits: LoadLimits) -> tuple[None, list[bytes]]:
    """In the parsing child: everything `_read_torch` will meet, on the meta device. Here,
    in a module that imports torch, so that a reader started without torch imports it
    once (for all its children) before its first dataset."""
    with torch.serialization.safe_globals([TensorDataset]):
        check_records(path, display, limits)
    return None, []


def _from_mapping(obj: Mapping[Any, Any], display: str) -> dict[str, Tensor]:
    if len(obj) > MAX_ENTRIES:
        raise DataError(f"{display} has {len(obj)} entries; at most {MAX_ENTRIES} are read.")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise DataError(f"{display} is a dict without tensors (keys: {list(obj)[:10]}).")
    return tensors


def _from_sequence(items: Sequence[Any], display: str) -> dict[str, Tensor]:
    if len(items) < 2 or not all(isinstance(t, Tensor) for t in items):
        raise DataError(
            f"{display} must be a tuple of at least two tensors (inputs..., target); "
            f"it holds {[type(t).__name__ for t in items][:10]}."
        )
    names = [f"input_{i}" for i in range(len(items) - 1)] + ["target"]
    return dict(zip(names, items, strict=True))


def _make_dataset(tensors: dict[str, Tensor], display: str, fmt: str) -> Dataset:
    if not tensors:
        raise DataError(f"{display} holds no tensors.")
    for name, t in tensors.items():
        if t.dim() == 0:
            raise DataError(f"{display}: {name} is a single number, not one value per sample.")
        if t.layout != torch.strided or t.is_quantized or t.dtype.is_complex:
            raise DataError(
                f"{display}: {name} is a {t.dtype} {t.layout} tensor; use dense real tensors."
            )
    counts = {t.shape[0] for t in tensors.values()}
    layout: tuple[str, ...] = ()
    if len(counts) != 1:
        # Sequence-first data ([seq, batch, ...]) agrees on dimension 1 instead; the model's
        # layout decides how it is cut (layout.py).
        second = {t.shape[1] if t.dim() > 1 else -1 for t in tensors.values()}
        if len(second) != 1 or -1 in second:
            shapes = ", ".join(f"{k} {tuple(t.shape)}" for k, t in tensors.items())
            raise DataError(
                f"The entries of {display} disagree on the number of samples (dimension 0): "
                f"{shapes}."
            )
        counts = second
        layout = (
            "The entries agree on dimension 1, not 0: read as sequence-first data with "
            f"{next(iter(second))} samples along dimension 1.",
        )
    warnings = layout + tuple(
        f"{name} contains {n_bad} NaN or Inf values; training will refuse to start on it."
        for name, t in tensors.items()
        if t.is_floating_point() and (n_bad := int((~torch.isfinite(t)).sum())) > 0
    )
    return Dataset(
        tensors=dict(tensors),
        source_name=display,
        format=fmt,
        n_samples=counts.pop(),
        warnings=warnings,
    )


def dataset_from_tensors(tensors: Mapping[str, Tensor], *, name: str = "in memory") -> Dataset:
    """Wrap tensors already in memory (tests, the demo) with the same checks as a file."""
    return _make_dataset(dict(tensors), name, "memory")


# ---------------------------------------------------------------- mapping


def guess_mapping(dataset: Dataset, input_specs: Sequence[ModelInput] | None = None) -> DataMapping:
    """Guess which entries are the model's inputs and which is the target.

    Names decide first (`src`/`tgt` are inputs of an encoder-decoder, the target is then
    `y`/`target`/`labels`/`tgt_out`/...), then dtypes and ranks against the model's
    expected inputs (token inputs want integer tensors).
    """
    names = list(dataset.tensors)
    reasons: list[str] = []
    inputs: list[str] = []
    if input_specs:
        for spec in input_specs:
            chosen = _pick_input(dataset, spec, [n for n in names if n not in inputs])
            if chosen is None:
                raise DataError(
                    f"No entry of {dataset.source_name} fits the model input {spec.name!r} "
                    f"({spec.dtype}, {len(spec.shape)} dimensions); entries: {_listing(dataset)}."
                )
            inputs.append(chosen[0])
            reasons.append(chosen[1])
    rest = [n for n in names if n not in inputs]
    target = _pick_target(rest)
    if target is None:
        raise DataError(
            f"{dataset.source_name} has no entry left for the target after the inputs "
            f"{inputs}; entries: {_listing(dataset)}."
        )
    reasons.append(
        f"target {target!r} by its name"
        if target.lower() in TARGET_NAMES
        else f"target {target!r} as the last entry"
    )
    if not input_specs:
        inputs = [n for n in rest if n != target]
        if not inputs:
            raise DataError(
                f"{dataset.source_name} has only one entry ({target!r}); it needs inputs and a target."
            )
        reasons.insert(0, f"inputs {inputs}: every other entry")
    loss = default_loss(dataset.tensors[target])
    reasons.append(f"{loss} loss for {dataset.tensors[target].dtype} targets".replace("torch.", ""))
    return DataMapping(tuple(inputs), target, loss, "; ".join(reasons))


def _pick_input(dataset: Dataset, spec: ModelInput, free: list[str]) -> tuple[str, str] | None:
    """The entry for one model input, with a reason, or None."""

    def fits(name: str) -> bool:
        t = dataset.tensors[name]
        wants_int = spec.dtype == "long"
        return (not t.is_floating_point()) == wants_int and t.dim() == len(spec.shape)

    by_name = [n for n in free if n.lower() == spec.name.lower()]
    if by_name and fits(by_name[0]):
        return by_name[0], f"{spec.name!r} by its name"
    # Prefer entries that do not look like targets, then the first in file order.
    candidates = [n for n in free if fits(n) and n.lower() not in TARGET_NAMES]
    candidates += [n for n in free if fits(n) and n.lower() in TARGET_NAMES]
    if candidates:
        return candidates[0], f"{spec.name!r} from {candidates[0]!r} by dtype and rank"
    return None


def _pick_target(names: list[str]) -> str | None:
    lowered = {n.lower(): n for n in names}
    for candidate in TARGET_NAMES:
        if candidate in lowered:
            return lowered[candidate]
    return names[-1] if names else None


def make_mapping(
    dataset: Dataset, inputs: Sequence[str], target: str, loss: str | None = None
) -> DataMapping:
    """A mapping chosen by the user, checked against the dataset."""
    unknown = [n for n in (*inputs, target) if n not in dataset.tensors]
    if unknown:
        raise DataError(
            f"{dataset.source_name} has no entry {unknown[0]!r}; available: {_listing(dataset)}."
        )
    if not inputs:
        raise DataError("Choose at least one input entry.")
    if target in inputs:
        raise DataError(f"{target!r} cannot be both an input and the target.")
    name = default_loss(dataset.tensors[target]) if loss is None else loss_name(loss)
    if name == "cross_entropy" and dataset.tensors[target].is_floating_point():
        raise DataError(f"Cross-entropy needs integer class targets; {target!r} holds floats.")
    return DataMapping(tuple(inputs), target, name, "chosen by the user")


def loss_name(text: str) -> LossName:
    """`text` as one of the LOSSES; DataError for anything else."""
    for name in LOSSES:
        if text == name:
            return name
    raise DataError(f"Unknown loss {text!r}; choose one of {list(LOSSES)}.")


def default_loss(target: Tensor) -> LossName:
    """MSE for float targets, cross-entropy for integer class targets."""
    return "mse" if target.is_floating_point() else "cross_entropy"


def loss_function(mapping: DataMapping) -> LossFunction:
    return LossFunction(mapping.loss)


def mapped_tensors(dataset: Dataset, mapping: DataMapping) -> tuple[tuple[Tensor, ...], Tensor]:
    """(inputs in forward order, target)."""
    return tuple(dataset.tensors[n] for n in mapping.inputs), dataset.tensors[mapping.target]


def _listing(dataset: Dataset) -> str:
    return ", ".join(f"{k} {v}" for k, v in dataset.describe().items())


def _describe(t: Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')} {tuple(t.shape)}"


# ---------------------------------------------------------------- split and baseline


def split_indices(n: int, val_fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Seeded random (train, validation) sample indices; DataError if a side is empty."""
    n_val = round(n * val_fraction)
    if n_val < 1 or n_val >= n:
        raise DataError(
            f"A validation fraction of {val_fraction} leaves no samples on one side "
            f"({n} samples in all)."
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_val:], order[:n_val]


def split(dataset: Dataset, val_fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
    """A random train/validation split.

    Optional: by default nothing is split and the model is evaluated on the same data it
    trains on (what recovering a model on its own task usually wants).
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"The validation fraction must be between 0 and 1, not {val_fraction}.")
    train_idx, val_idx = split_indices(dataset.n_samples, val_fraction, seed)

    def take(idx: Tensor, suffix: str) -> Dataset:
        return replace(
            dataset,
            tensors={k: t[idx] for k, t in dataset.tensors.items()},
            n_samples=len(idx),
            source_name=f"{dataset.source_name} ({suffix})",
        )

    return take(train_idx, "train"), take(val_idx, "validation")


def baseline_loss(
    model: nn.Module,
    inputs: Sequence[Tensor],
    target: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batch_size: int = 256,
) -> float:
    """The loss of the model as it is (eval mode, no grad): the line training must beat.

    Each module's own mode is put back afterwards (frozen layers stay in eval mode)."""
    with eval_mode(model):
        return evaluate(model, inputs, target, loss_fn, batch_size)


@torch.no_grad()
def evaluate(
    forward: Callable[..., Tensor],
    inputs: Sequence[Tensor],
    target: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batch_size: int = 256,
) -> float:
    """Mean loss over all samples, in batches, weighting each batch by its size."""
    n = target.shape[0]
    total = 0.0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        out = forward(*(t[start:stop] for t in inputs))
        total += float(loss_fn(out, target[start:stop])) * (stop - start)
    return total / n


__all__ = [
    "DataMapping",
    "Dataset",
    "LossFunction",
    "baseline_loss",
    "dataset_from_tensors",
    "default_loss",
    "evaluate",
    "guess_mapping",
    "load_dataset",
    "loss_function",
    "loss_name",
    "make_mapping",
    "mapped_tensors",
    "split",
]
