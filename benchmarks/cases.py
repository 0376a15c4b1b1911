"""Generated inputs for the benchmarks (made once, kept in benchmarks/_work, never committed)."""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

MiB = 1 << 20


def _tensors(total_bytes: int, keys: int) -> dict[str, torch.Tensor]:
    """`keys` float32 Linear weights adding up to about `total_bytes`."""
    per_key = max(total_bytes // keys // 4, 1)
    side = max(int(per_key**0.5), 1)
    return {f"layers.{i}.weight": torch.zeros(side, max(per_key // side, 1)) for i in range(keys)}


def big_checkpoint(work: Path, total_bytes: int, fmt: str, keys: int = 16) -> Path:
    path = work / f"big_{total_bytes // MiB}MiB_{keys}k.{fmt}"
    if not path.exists():
        tensors = _tensors(total_bytes, keys)
        tmp = path.with_suffix(".tmp")
        if fmt == "pt":
            torch.save(tensors, tmp)
        else:
            save_file(tensors, str(tmp))
        tmp.rename(path)
    return path


def many_keys_checkpoint(work: Path, keys: int) -> Path:
    """`keys` small tensors: a Sequential of Linear layers with bias (16 floats each)."""
    path = work / f"keys_{keys}.pt"
    if not path.exists():
        tensors = {}
        for i in range(keys // 2):
            tensors[f"{i}.weight"] = torch.zeros(4, 4)
            tensors[f"{i}.bias"] = torch.zeros(4)
        tmp = path.with_suffix(".tmp")
        torch.save(tensors, tmp)
        tmp.rename(path)
    return path


def many_blocks_checkpoint(work: Path, keys: int) -> Path:
    """About `keys` small tensors in a model's usual layout: an embedding, then repeated blocks
    `blocks.{i}.{mix,proj,norm}.{weight,bias}` (Linear, Linear, LayerNorm), then a head."""
    path = work / f"blocks_{keys}.pt"
    if not path.exists():
        tensors = {"embed.weight": torch.zeros(8, 4)}
        for i in range((keys - 2) // 6):
            for part in ("mix", "proj"):
                tensors[f"blocks.{i}.{part}.weight"] = torch.zeros(4, 4)
                tensors[f"blocks.{i}.{part}.bias"] = torch.zeros(4)
            tensors[f"blocks.{i}.norm.weight"] = torch.ones(4)
            tensors[f"blocks.{i}.norm.bias"] = torch.zeros(4)
        tensors["head.weight"] = torch.zeros(3, 4)
        tmp = path.with_suffix(".tmp")
        torch.save(tensors, tmp)
        tmp.rename(path)
    return path


def as_people_run_it() -> dict[str, str]:
    """The environment of a timed whole process, as people run it: Python keeps the
    compiled bytecode of what it imports. A shell with PYTHONDONTWRITEBYTECODE=1 makes
    every process compile each changed module again (~4 ms a module, ~0.3 s for the
    whole library)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def read_index_only(path: str, fmt: str) -> int:
    """The physical floor: list the zip directory or parse the safetensors header, nothing else."""
    if fmt == "pt":
        with zipfile.ZipFile(path) as archive:
            return len(archive.infolist())
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return len(json.loads(f.read(length)))


# --- the demo model and its data, scaled up (section 2, 4, 5) -------------------------------

ROOT = Path(__file__).resolve().parents[1]
DEMO_CHECKPOINT = ROOT / "assets" / "demo_checkpoint.pt"
DEMO_DATA = ROOT / "assets" / "demo_data.pt"
# What the demo's weights cannot show (assets/make_demo.py): the search finds these values.
DEMO_HIDDEN = {
    "nhead": 4,
    "batch_first": True,
    "scale_embedding": True,
    "causal_mask": True,
    "dropout": 0.0,
}


def demo_module():  # noqa: ANN201 - the assets module, imported by path
    """assets/make_demo.py as a module: the model class a notebook user would have."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_demo", ROOT / "assets" / "make_demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def demo_sequences(n: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """The demo's task (copy with two output tokens renamed) with `n` sequences."""
    return demo_module().make_dataset(torch.Generator().manual_seed(seed), n=n)


# --- a plain MLP: Linear layers with ReLUs between them (sections 3 and 6) ------------------


def mlp_state_dict(width: int, layers: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Keys 0, 2, 4, ...: an nn.Sequential(Linear, ReLU, Linear, ...) as people save it."""
    gen = torch.Generator().manual_seed(seed)
    scale = width**-0.5
    tensors = {}
    for i in range(layers):
        tensors[f"{2 * i}.weight"] = torch.randn(width, width, generator=gen) * scale
        tensors[f"{2 * i}.bias"] = torch.zeros(width)
    return tensors


def mlp_checkpoint(work: Path, total_bytes: int, layers: int = 16) -> Path:
    """`layers` square Linear layers adding up to about `total_bytes` (same keys at any size)."""
    width = max(int((total_bytes / layers / 4) ** 0.5), 4)
    path = work / f"mlp_{total_bytes // MiB}MiB_w{width}.pt"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        torch.save(mlp_state_dict(width, layers), tmp)
        tmp.rename(path)
    return path


def mlp_data(work: Path, width: int, n: int = 64) -> Path:
    """Inputs `x` and targets `y` for a width-wide MLP."""
    path = work / f"mlp_data_w{width}_{n}.pt"
    if not path.exists():
        gen = torch.Generator().manual_seed(1)
        tmp = path.with_suffix(".tmp")
        torch.save(
            {"x": torch.randn(n, width, generator=gen), "y": torch.randn(n, width, generator=gen)},
            tmp,
        )
        tmp.rename(path)
    return path


def regression_problem(n: int, d_in: int = 64, hidden: int = 256, d_out: int = 8, seed: int = 0):  # noqa: ANN201
    """A frozen random MLP trunk with a Linear head, and a smooth target it can fit in part."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(d_in, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, d_out),
    )
    x = torch.randn(n, d_in, generator=gen)
    y = torch.sin(x @ torch.randn(d_in, d_out, generator=gen) * 0.3)
    return model, x, y
