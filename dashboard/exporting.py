"""Exporting a run in the background, one file at a time, for one session.

The click builds the export (it refuses to write over a file that was read) and a
daemon thread writes and verifies the files, TorchScript first; each file can be
downloaded as soon as it is verified, while the others are still being written. The
finished bundle is taken into the session by the page's own script run (`collect`).
"""

from __future__ import annotations

import copy
import tempfile
import threading
import time
from dataclasses import dataclass, field

import recovery_core as rc
from dashboard import state

REFRESH_SECONDS = 0.5


@dataclass
class ExportJob:
    number: int  # the run it exports
    exporter: rc.session.Exporter
    started: float = field(default_factory=time.monotonic)
    step: str | None = None  # the step being written and checked now
    step_started: float = 0.0
    ready_after: dict[str, float] = field(default_factory=dict)  # step -> seconds after start
    bundle: rc.ExportBundle | None = None
    error: BaseException | None = None
    collected: bool = False  # seen ended by the page
    _thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def exports(self) -> tuple[rc.session.ExportCheck, ...]:
        """The files verified so far (a snapshot: the job's thread adds to them)."""
        return tuple(self.exporter.exports)

    @property
    def fraction(self) -> float:
        return len(self.exporter.done) / max(len(self.exporter.steps), 1)

    def work(self) -> None:
        try:
            for step in self.exporter.pending:
                self.step, self.step_started = step, time.monotonic()
                self.exporter.run(step)
                self.ready_after[step] = time.monotonic() - self.started
            self.step = None
            self.bundle = self.exporter.finish()  # the frozen check and the report
        except Exception as exc:  # noqa: BLE001 - shown to the person by the page
            self.error = exc
        finally:
            self.step = None


def start(studio: state.Studio, record: state.RunRecord) -> ExportJob:
    """Export one run with the data it trained on (not what step 3 shows now)."""
    mapping = record.mapping
    assert studio.opened is not None and mapping is not None
    result = record.outcome
    report = rc.session.recovery_report(
        checkpoint=studio.opened.source.label,
        data=record.data_name,
        mapping=mapping,
        spec=record.spec,
        plan=record.plan,
        training=result,
        states=record.states,
        details={
            "settings": [
                {**row, "state": record.states.get(row["name"], row["state"])}
                for row in rc.plan.settings_report(record.spec)
            ],
            "unverified_settings": list(record.unverified),
            "wiring": record.spec.wiring.description if record.spec.wiring else None,
            "evaluated_on": (
                f"{record.held_out:.0%} held out" if record.held_out else "training data"
            ),
        },
    )
    # The files take the data as the user gives it: the batch-major view is dropped. The
    # copy is the job's own: the run's model stays as it is for comparing and exporting again.
    exporter = rc.session.trained_exporter(
        rc.drop_batch_major(copy.deepcopy(result.model)),
        rc.from_batch_major(record.example_inputs, rc.batch_dims(record.spec)),
        # A folder of its own: an export still writing (of a run since dropped) never
        # shares files with a new one.
        tempfile.mkdtemp(prefix=f"run-{record.number}-", dir=studio.workdir),
        spec=record.spec,
        original=studio.opened.checkpoint.state_dict(),
        plan=record.plan,
        report=report,
        stem="recovered",
    )
    job = ExportJob(record.number, exporter)
    job._thread = threading.Thread(target=job.work, name="export", daemon=True)
    studio.exports.pop(record.number, None)  # the files are being written again
    studio.export_jobs[record.number] = job
    job._thread.start()
    return job


def collect(studio: state.Studio) -> bool:
    """Take finished exports into the session (from the page's script run); a failed one
    stays, for the page to show its error. True when one ended since the last look: the
    page should be drawn again."""
    ended = False
    for number, job in list(studio.export_jobs.items()):
        if job.running or job.collected:
            continue
        job.collected, ended = True, True
        if job.bundle is not None:
            studio.exports[number] = job.bundle
            del studio.export_jobs[number]
    return ended
