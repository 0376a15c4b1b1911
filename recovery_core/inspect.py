"""What a person sees first: the key/shape table and the inferred layer tree.

Inspecting costs O(keys): shapes come from the checkpoint's index, roles (parameter or
buffer) from the module type that owns each key. A key no layer type explains is kept
as is on its module (infer/kept.py), which also says whether it is a buffer and why.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from recovery_core import humanize
from recovery_core.infer import infer_spec
from recovery_core.infer.registry import BUFFERS_BY_TYPE
from recovery_core.io.checkpoint import Checkpoint, load_checkpoint
from recovery_core.model.spec import ArchSpec, ModuleSpec


@dataclass(frozen=True, slots=True)  # slots: one row per tensor, 100,000 are common
class TensorRow:
    name: str
    shape: tuple[int, ...]
    dtype: str
    numel: int
    nbytes: int
    role: str  # "parameter" or "buffer"
    module: str  # path of the module that owns it ("" for the root)
    module_type: str
    why: str = ""  # for a tensor kept as is: why it is a parameter or a buffer

    @property
    def kept(self) -> bool:
        """True when no layer type explains it: it is kept as is on its module."""
        return bool(self.why)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "numel": self.numel,
            "nbytes": self.nbytes,
            "role": self.role,
            "module": self.module,
            "module_type": self.module_type,
            "kept_as_is": self.kept,
            "why": self.why,
        }


@dataclass(frozen=True)
class Inspection:
    checkpoint: Checkpoint
    spec: ArchSpec
    rows: tuple[TensorRow, ...]

    @property
    def parameter_count(self) -> int:
        """Distinct parameters, as `model.parameters()` counts them: a tied weight once."""
        shared = self._shared_parameters
        return sum(r.numel for r in self.rows if r.role == "parameter" and r.name not in shared)

    @functools.cached_property
    def _shared_parameters(self) -> dict[str, str]:
        """key -> the module path below which it is a second name for another parameter."""
        modules = {r.name: r.module for r in self.rows if r.role == "parameter"}
        shared = {}
        for key, source in self.checkpoint.tied.items():
            if key in modules and source in modules:
                mine, theirs = modules[key].split("."), modules[source].split(".")
                common = 0
                while common < min(len(mine), len(theirs)) and mine[common] == theirs[common]:
                    common += 1
                shared[key] = ".".join(mine[:common]) if modules[key] else ""
        return shared

    @functools.cached_property
    def _parameters_by_module(self) -> dict[str, int]:
        """Parameters under each module path (its own and its descendants'), in one pass.
        A tied weight counts once: its second name only below where the two names meet."""
        counts: dict[str, int] = {}
        shared = self._shared_parameters
        own: dict[str, int] = {}  # module path -> its own parameters, then climbed once
        for row in self.rows:
            if row.role != "parameter":
                continue
            if row.name not in shared:
                own[row.module] = own.get(row.module, 0) + row.numel
                continue
            path = row.module
            while path != shared[row.name]:  # from there up, the tied weight is counted
                counts[path] = counts.get(path, 0) + row.numel
                if not path:
                    break
                path = path.rpartition(".")[0]
        for path, numel in own.items():
            while True:
                counts[path] = counts.get(path, 0) + numel
                if not path:
                    break
                path = path.rpartition(".")[0]
        return counts

    def module_parameter_count(self, module: ModuleSpec) -> int:
        return self._parameters_by_module.get(module.path, 0)

    def to_json(self) -> dict[str, Any]:
        ckpt = self.checkpoint
        spec_json = self.spec.to_json()
        return {
            "source": ckpt.source_name,
            "format": ckpt.format,
            "wrapper_key": ckpt.wrapper_key,
            "stripped_prefix": ckpt.stripped_prefix,
            "extras": dict(ckpt.extras),
            "hyper_parameters_in_file": dict(ckpt.hyper_parameters),
            "metadata": dict(ckpt.metadata),
            "warnings": list(ckpt.warnings),
            "parameter_count": self.parameter_count,
            "tensors": [r.to_json() for r in self.rows],
            **spec_json,
        }

    def _forward_lines(self) -> list[str]:
        """The forward used, and every other that fits, ranked (a name for --wiring)."""
        spec = self.spec
        if spec.wiring is None:
            why = next((n for n in spec.notes if "forward" in n.lower()), "none fits")
            return ["", f"FORWARD: none. {why}"]
        lines = ["", f"FORWARD: {spec.wiring.kind}: {spec.wiring.description}"]
        if len(spec.wirings) > 1:
            lines.append(
                f"  {len(spec.wirings)} forwards fit the weights (recover scores them on data; "
                "--wiring NAME picks one):"
            )
            for rank, wiring in enumerate(spec.wirings, start=1):
                mark = " (used)" if wiring.name == spec.wiring.name else ""
                lines.append(f"  {rank}. {wiring.name}{mark}: {wiring.reason}")
        return lines

    def to_text(self) -> str:
        return "\n".join(self.text_lines()) + "\n"

    def text_lines(self) -> Iterator[str]:
        """The text report one line at a time (no newlines): a caller can print 100,000
        rows as they come instead of holding the whole text."""
        ckpt = self.checkpoint
        yield (
            f"{ckpt.source_name}: {ckpt.format}, {len(self.rows)} tensors, "
            f"{humanize.count(self.parameter_count)} parameters"
        )
        if ckpt.wrapper_key:
            yield f"weights found under the entry {ckpt.wrapper_key!r}"
        if ckpt.stripped_prefix:
            yield f"stripped the prefix {ckpt.stripped_prefix!r} shared by every key"
        for key, summary in ckpt.extras.items():
            yield f"also in the file: {key}: {summary}"
        for w in ckpt.warnings:
            yield f"warning: {w}"
        yield from self._table_lines()
        yield from ("", "LAYER TREE")
        yield from self._tree_lines(self.spec.root, 0)
        yield from ("", "HYPERPARAMETERS")
        for hp in self.spec.hyperparameters:
            if hp.determined:
                yield f"  {hp.name} = {hp.value!r}   ({hp.source}: {hp.evidence})"
            else:
                yield (
                    f"  {hp.name} = {hp.value!r}   (not determined by the weights; "
                    f"candidates: {', '.join(map(repr, hp.candidates))}; {hp.source})"
                )
        yield from self._forward_lines()
        kept = [r for r in self.rows if r.kept]
        if kept:
            yield from (
                "",
                "KEPT AS IS (no layer type explains them; rebuilt under their own names)",
            )
            yield from (f"  {r.name}  {r.role}: {r.why}" for r in kept)
        if self.spec.notes:
            yield from ("", "NOTES")
            yield from (f"  {n}" for n in self.spec.notes)

    def _table_lines(self) -> Iterator[str]:
        yield from ("", "TENSORS")
        width = max([len(r.name) for r in self.rows] + [4])
        yield f"{'name':<{width}}  {'shape':<18} {'dtype':<9} {'kind':<9} {'size':>10}"
        # A file repeats a few shapes and sizes: each is written out once.
        shapes: dict[tuple[int, ...], str] = {}
        sizes: dict[int, str] = {}
        for r in self.rows:
            shape = shapes.get(r.shape)
            if shape is None:
                shape = shapes[r.shape] = f"{humanize.shape(r.shape):<18}"
            size = sizes.get(r.nbytes)
            if size is None:
                size = sizes[r.nbytes] = f"{humanize.size(r.nbytes):>10}"
            yield f"{r.name:<{width}}  {shape} {r.dtype:<9} {r.role:<9} {size}"

    def _tree_lines(self, module: ModuleSpec, depth: int) -> Iterator[str]:
        # A stack, not a generator per module: at 66,000 modules, every line passed up
        # through one generator per level.
        pending = [(module, depth)]
        while pending:
            module, depth = pending.pop()
            yield self._tree_label(module, depth)
            pad = "  " * (depth + 1)
            for t in module.kept:
                yield f"{pad}{t.name}: kept as is, {t.kind} {humanize.shape(t.shape)} {t.dtype}"
            pending.extend((child, depth + 1) for child in reversed(module.children))

    def _tree_label(self, module: ModuleSpec, depth: int) -> str:
        name = module.name or "(model)"
        args = ", ".join(f"{k}={v!r}" for k, v in module.args.items())
        label = f"{'  ' * depth}{name}: {module.type}({args})"
        params = self.module_parameter_count(module)
        if params:
            label += f"  [{humanize.count(params)} params]"
        if module.alternatives:
            label += f"  (or {', '.join(module.alternatives)}: {module.note})"
        return label


def tensor_role(key: str, owner: ModuleSpec | None) -> str:
    """ "parameter" or "buffer", as the owning module type registers it: its family
    declares its buffers (infer/registry.py), every other tensor of it is a parameter."""
    leaf = key.rsplit(".", 1)[-1]
    if owner is None:  # only in a hand-made spec: inference gives every key an owner
        return "parameter"
    if owner.kept:
        kept = next((t for t in owner.kept if t.name == leaf), None)
        if kept is not None:
            return kept.kind
    if owner.type not in BUFFERS_BY_TYPE:
        return "parameter"
    buffers = BUFFERS_BY_TYPE[owner.type]
    return "buffer" if buffers is None or leaf in buffers else "parameter"


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Listing builds many small objects that stay alive and form no cycles (a row per
    tensor, a spec per module): the collector's full passes over them were ~20 % of the
    work at 100,000 keys. Cycles made meanwhile are collected once it runs again."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def describe(checkpoint: Checkpoint, spec: ArchSpec | None = None) -> Inspection:
    with _collector_paused():
        return _describe(checkpoint, spec)


def _describe(checkpoint: Checkpoint, spec: ArchSpec | None) -> Inspection:
    spec = spec if spec is not None else infer_spec(checkpoint)
    owners = {key: m for m in spec.modules() for key in m.keys}
    reasons = {
        (f"{m.path}.{t.name}" if m.path else t.name): t.why for m in spec.modules() for t in m.kept
    }
    rows = []
    for t in checkpoint.tensors:
        owner = owners.get(t.name)
        rows.append(
            TensorRow(
                name=t.name,
                shape=t.shape,
                dtype=t.dtype,
                numel=t.numel,
                nbytes=t.nbytes,
                role=tensor_role(t.name, owner),
                module=owner.path if owner else "",
                module_type=owner.type if owner else "unexplained",
                why=reasons.get(t.name, ""),
            )
        )
    return Inspection(checkpoint, spec, tuple(rows))


def inspect_checkpoint(
    source: str | os.PathLike[str] | bytes, *, name: str | None = None
) -> Inspection:
    with _collector_paused():
        return describe(load_checkpoint(source, name=name))
