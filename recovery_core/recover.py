"""The whole job in one call: checkpoint + data -> searched, retrained, exported, verified.

This is what `recovery recover` runs: a short script over `session.Recovery`, whose steps
the dashboard drives one by one.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recovery_core import humanize
from recovery_core.errors import ExportError, RecoveryError
from recovery_core.export.files import export_paths, formats_to_write, refuse_overwriting_input
from recovery_core.io import sandbox
from recovery_core.io.checkpoint import Checkpoint, load_checkpoint
from recovery_core.io.container import sniff_format
from recovery_core.io.data_file import CheckedFile, check_before_torch
from recovery_core.model.spec import ArchSpec
from recovery_core.plan import TrainingSettings

# Nothing above imports torch: `recover` reads its files first (see `recover`).
if TYPE_CHECKING:
    from recovery_core.export.exporter import ExportBundle
    from recovery_core.fit.search import SearchResult
    from recovery_core.fit.train import Method, TrainingResult
    from recovery_core.session import Log


@dataclass(frozen=True)
class RecoverOptions:
    inputs: tuple[str, ...] = ()  # dataset entries fed to the model; guessed when empty
    target: str | None = None  # guessed when None
    unfreeze: tuple[str, ...] = ()  # module patterns; default: only the output layer
    fixed: Mapping[str, Any] = field(
        default_factory=dict
    )  # hidden hyperparameters set by the person
    method: Method = "auto"
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 32
    device: str = "auto"
    seed: int = 0
    val_fraction: float = 0.0  # part of the data held out for evaluation (a dashboard plan)
    loss: str | None = None  # "mse" | "cross_entropy"; guessed from the target when None
    search_budget_seconds: float = 30.0
    wiring: str | None = None  # the forward to use (a name from spec.wirings); scored when None
    formats: tuple[str, ...] | None = None  # export.FORMATS to write besides TorchScript; None: all

    @property
    def training(self) -> TrainingSettings:
        """The training settings among these options."""
        return TrainingSettings(**{f.name: getattr(self, f.name) for f in fields(TrainingSettings)})


@dataclass(frozen=True)
class RecoverResult:
    spec: ArchSpec
    search: SearchResult | None
    training: TrainingResult
    bundle: ExportBundle
    out_path: str

    @property
    def passed(self) -> bool:
        return self.bundle.passed

    def summary(self) -> str:
        lines = ["hyperparameters:"]
        for hp in self.spec.hyperparameters:
            if not hp.determined:
                lines.append(f"  {hp.name} = {hp.value!r} ({hp.source})")
        t = self.training
        lines.append(
            f"loss: baseline {humanize.loss(t.baseline_loss)} -> final {humanize.loss(t.final_loss)}"
            f" ({t.method_used}, {humanize.seconds(t.seconds)})"
        )
        lines.append("verification:")
        for check in self.bundle.checks:
            mark = "ok  " if check.passed else "FAIL"
            lines.append(f"  [{mark}] {check.name}: {check.detail}")
        verdict = "all checks passed" if self.passed else "SOME CHECKS FAILED"
        lines.append(f"{verdict}; wrote {self.out_path}")
        return "\n".join(lines)


@dataclass(frozen=True)
class OpenedFiles:
    """What `recover` does before it imports torch: the output checked, the checkpoint
    read and the dataset's checks made (None: left to the full file reader)."""

    checkpoint_path: str
    data_path: str
    written: tuple[str, ...]  # every file it may write (none of them a file it reads)
    checkpoint: Checkpoint | None  # None: read by the full file reader, after torch
    checked: CheckedFile | None


def open_files(
    checkpoint_path: str,
    data_path: str,
    out_path: str,
    options: RecoverOptions = RecoverOptions(),
    *,
    report_path: str | None = None,
) -> OpenedFiles:
    """`recover`'s first step, which needs no torch: refuse a bad output, read the files."""
    out = Path(out_path)
    if out.suffix != ".pt":
        raise ExportError(f"--out should name a TorchScript file ending in .pt, got {out.name!r}")
    formats_to_write(options.formats)  # an unknown format is refused before any work
    # Refuse before any work: nothing may overwrite a file that is read (the checkpoint,
    # its shards and index, the dataset); checked again once the shards are known.
    written = [*export_paths(out.parent, out.stem, with_code=True).values()]
    written += [report_path] if report_path else []
    refuse_overwriting_input(written, [checkpoint_path, data_path])
    # Both files are read before torch is imported, each in a limited child forked from
    # this process while it is small (no torch-importing file reader beside it). A file
    # that needs torch's unpickler gets that reader started now instead, so that its
    # import overlaps ours; it is read once torch is loaded, as before.
    if "torch" in sys.modules or not _read_without_torch(checkpoint_path):
        sandbox.prestart()
        return OpenedFiles(checkpoint_path, data_path, tuple(written), None, None)
    checkpoint = load_checkpoint(checkpoint_path)
    checked = check_before_torch(data_path)
    if checked is None:
        sandbox.prestart()
    return OpenedFiles(checkpoint_path, data_path, tuple(written), checkpoint, checked)


def _read_without_torch(path: str) -> bool:
    """Is the checkpoint a file the metadata reader reads without torch: a zip archive
    (torch.save's format) or safetensors, by its content? A legacy pickle (torch's
    unpickler), a sharded folder or anything else goes to the full reader."""
    try:
        return sniff_format(Path(path), "the checkpoint") in ("torch-zip", "safetensors")
    except (RecoveryError, OSError):
        return False  # said by load_checkpoint, in the reader


def recover(
    checkpoint_path: str,
    data_path: str,
    out_path: str,
    options: RecoverOptions = RecoverOptions(),
    *,
    report_path: str | None = None,
    log: Log = lambda line: None,
    progress_bar: bool = False,
    opened: OpenedFiles | None = None,
) -> RecoverResult:
    """The whole job; `opened`: its first step (`open_files`) done already."""
    if opened is None:
        opened = open_files(checkpoint_path, data_path, out_path, options, report_path=report_path)
    assert (opened.checkpoint_path, opened.data_path) == (checkpoint_path, data_path)
    from recovery_core.session import Recovery  # imports torch

    recovery = Recovery.open(
        checkpoint_path,
        wiring=options.wiring,
        values=options.fixed,
        writes=opened.written,
        reads=[data_path],
        log=log,
        checkpoint=opened.checkpoint,
    )
    recovery.map_data(
        data_path, options.inputs, options.target, options.loss, checked=opened.checked
    )
    search = recovery.search(options.search_budget_seconds)
    training = recovery.train(
        options.training, options.unfreeze, device=options.device, progress_bar=progress_bar
    )
    out = str(Path(out_path))
    bundle = recovery.export(out, formats=options.formats, report_path=report_path)
    return RecoverResult(recovery.spec, search, training, bundle, out)


def choose_forward(spec: ArchSpec, name: str | None) -> ArchSpec:
    """`session.choose_forward`, imported where it is used (session imports torch)."""
    from recovery_core.session import choose_forward as chosen

    return chosen(spec, name)


__all__ = [
    "OpenedFiles",
    "RecoverOptions",
    "RecoverResult",
    "choose_forward",
    "open_files",
    "recover",
]
