"""Scoring the hidden settings on data, in the background, for one session.

When data is mapped and some settings are still unverified defaults, scoring starts by
itself (`maybe_start`); every page shows its progress and a Stop. The result is applied
by the page's own script run (`collect`), never from the job's thread, and only if the
settings it scored are still the ones the session has. Sessions that ask for the same
search at the same time share one (`_Flight`).
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import recovery_core as rc
from dashboard import datasets, state, ui
from recovery_core.fit.search import walks_a_beam

BUDGET_SECONDS = 60.0
# The search scores on the samples `recovery recover` scores on (score_candidates'
# default): the ranking, its losses and what is found are the command line's. With 128
# the app ranked the demo on half its samples and showed other losses than the CLI.
# A job waits for the page that started it to be drawn (`release`): the search and the
# page would otherwise share the CPU, and the first page took ~1 s longer. At most this long.
HOLD_SECONDS = 10.0
# A search that ends this soon after its page is drawn (the shapes alone told that
# nothing can run, or the ranking was kept) is shown by drawing the page again at once,
# not at the progress's next refresh (status.REFRESH_SECONDS later).
QUICK_SECONDS = 0.3
# Finished searches, shared by this server's sessions: the same checkpoint, data, mapping,
# values and names score the same, so a reload, a second visitor of the demo or a choice
# taken back gets the ranking at once instead of waiting for the search again. A result
# is a short ranked list; a stopped search, or one its time budget cut short (a busy
# moment), is not kept.
RESULTS_KEPT = 32
_results: OrderedDict[str, rc.SearchResult] = OrderedDict()
_results_lock = threading.Lock()


def _remembered(key: str) -> rc.SearchResult | None:
    with _results_lock:
        if key in _results:
            _results.move_to_end(key)
        return _results.get(key)


def _remember(key: str, result: rc.SearchResult) -> None:
    if result.seconds >= BUDGET_SECONDS:
        return
    with _results_lock:
        _results[key] = result
        while len(_results) > RESULTS_KEPT:
            _results.popitem(last=False)


def forget_results() -> None:
    """Drop the kept rankings: the next search runs again (tests of the search itself)."""
    with _results_lock:
        _results.clear()


class _Stopped(Exception):
    """Raised inside the search's progress callback when the person pressed Stop."""


@dataclass
class ScoringJob:
    spec_key: str  # the settings it started from: its result applies only to these
    names: tuple[str, ...]
    automatic: bool
    fed: str = ""  # the data and entries it scores (`_fed_key`): the same applies
    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)
    result: rc.SearchResult | None = None
    error: BaseException | None = None
    stopped: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _go: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._go.set()  # a job still held ends at once

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def beam(self) -> bool:
        """Too many combinations to screen every one: the search refines the best ones
        and scores only a part, so `done` never reaches `total`."""
        return walks_a_beam(self.total)

    @property
    def fraction(self) -> float:
        """The bar: combinations scored of all; for a beam, the share of its time budget
        spent (screening stops there; the finalists' scoring follows)."""
        if self.beam:
            return min((time.monotonic() - self.started) / BUDGET_SECONDS, 1.0)
        return min(self.done / self.total, 1.0) if self.total else 0.0

    def counted(self) -> str:
        """How far it is, in words."""
        if self.beam:
            return (
                f"{self.done:,} combinations scored so far; too many to score all "
                f"{self.total:,}, so the best ones are refined one value at a time (its time "
                f"budget: {BUDGET_SECONDS:g} s)"
            )
        return f"{self.done:,} of {self.total or '…'} combinations"


def start(studio: state.Studio, names: tuple[str, ...], *, automatic: bool) -> ScoringJob:
    """Score `names` on this session's data in a daemon thread; settings the person chose
    and did not ask to score stay fixed."""
    assert studio.recovery is not None and studio.opened is not None
    job = ScoringJob(
        state.spec_key(studio.recovery.spec), tuple(names), automatic, _fed_key(studio)
    )
    # Everything the search reads: the weights (by content), the data and how it feeds the
    # model, the settings it starts from and the ones it scores.
    key = f"{studio.opened.source.key}|{_data_key(studio)}|{job.names}"
    # The flight this job's own search would be, if no same search is running already.
    own = _Flight(key)

    # Everything the search reads is taken now: a change meanwhile cannot reach it.
    search = studio.recovery.scorer(
        names,
        budget_seconds=BUDGET_SECONDS,
        progress=own.report,
        threads=None,  # process-wide: the app chose it once for every session
    )

    def work() -> None:
        if (kept := _remembered(key)) is not None:
            job.done = job.total = kept.total
            job.result = kept
            return
        job._go.wait(HOLD_SECONDS)
        if job._stop.is_set():
            job.stopped = True
            return
        flight = _board(own, search, job)
        try:
            while not flight.finished.wait(FOLLOW_SECONDS):
                job.done, job.total = flight.done, flight.total
                if job._stop.is_set():
                    job.stopped = True
                    return
        finally:
            flight.leave(job)
        job.done, job.total = flight.done, flight.total
        job.result, job.error = flight.result, flight.error
        job.stopped = flight.result is None and flight.error is None

    if studio.scoring is not None:
        studio.scoring.stop()
    job._thread = threading.Thread(target=work, name="scoring", daemon=True)
    studio.scoring, studio.scoring_error = job, None
    job._thread.start()
    return job


# Searches running now, by key: sessions that ask for the same search at once (the demo
# opened in several tabs) wait for one search instead of each running its own on the
# same cores (each of three at once took about three times as long as one alone).
_flights: dict[str, _Flight] = {}
_flights_lock = threading.Lock()
FOLLOW_SECONDS = 0.1  # how often a waiting job copies its flight's progress


class _Flight:
    """One search that one or more jobs wait for. It stops when every job has left it
    (each was stopped, or its session ended), never because one of them did."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.jobs: set[int] = set()
        self.done = self.total = 0
        self.result: rc.SearchResult | None = None
        self.error: BaseException | None = None
        self.finished = threading.Event()

    def report(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        with _flights_lock:
            if self.jobs:
                return
            # Nobody waits any more: later jobs start a search of their own.
            if _flights.get(self.key) is self:
                del _flights[self.key]
        raise _Stopped

    def leave(self, job: ScoringJob) -> None:
        with _flights_lock:
            self.jobs.discard(id(job))

    def run(self, search: Callable[[], rc.SearchResult]) -> None:
        try:
            self.result = search()
            _remember(self.key, self.result)
        except _Stopped:
            pass
        except Exception as exc:  # noqa: BLE001 - shown to the person by `collect`
            self.error = exc
        finally:
            with _flights_lock:
                if _flights.get(self.key) is self:
                    del _flights[self.key]
            self.finished.set()


def _board(own: _Flight, search: Callable[[], rc.SearchResult], job: ScoringJob) -> _Flight:
    """The running search for `own`'s key, joined; or `own`, started."""
    with _flights_lock:
        flight = _flights.setdefault(own.key, own)
        if flight is own:
            threading.Thread(target=own.run, args=(search,), name="search", daemon=True).start()
        flight.jobs.add(id(job))
        return flight


def release(studio: state.Studio, wait: float = 0.0) -> bool:
    """The page is drawn: the session's scoring may use the CPU now. True when this
    released a held job and it ended within `wait` seconds: draw the page again to show it."""
    job = studio.scoring
    if job is None or job._go.is_set():
        return False  # none, or released by an earlier run (already shown running)
    job._go.set()
    job.join(wait)
    return not job.running


def _data_key(studio: state.Studio) -> str:
    assert studio.spec is not None
    return f"{state.spec_key(studio.spec)}|{_fed_key(studio)}"


def _fed_key(studio: state.Studio) -> str:
    """The data the model is scored on: the dataset and which entries feed it."""
    source = studio.dataset_source.key if studio.dataset_source is not None else ""
    return f"{source}|{studio.mapping!r}"


def automatic() -> bool:
    """RECOVERY_AUTO_SCORE=off leaves scoring to a click (a shared server with big models)."""
    return os.environ.get("RECOVERY_AUTO_SCORE", "on").lower() not in ("off", "0", "false", "no")


def maybe_start(studio: state.Studio) -> None:
    """Data mapped, settings unverified, nobody chose to use them as they are: score them.
    Once per settings and data (a Stop is respected; a change of either starts again)."""
    if (
        not automatic()
        or not datasets.ready(studio)  # a model with no forward cannot be scored at all
        or studio.accept_unverified
        or studio.scoring_running
        or any(r.running for r in studio.runs)  # never compete with a run for the CPU
    ):
        return
    names = studio.unchecked()
    key = _data_key(studio)
    if not names or key in studio.auto_scored:
        return
    assert studio.spec is not None  # ready() holds a spec
    studio.auto_scored.add(key)
    # Score every setting the data can decide, so the ones already chosen stay consistent.
    start(studio, tuple(rc.searchable_names(studio.spec)), automatic=True)


def collect(studio: state.Studio) -> bool:
    """Apply a finished job's result (from the page's script run). True when a job ended
    (applied, stopped or failed): the page should be drawn again."""
    job = studio.scoring
    if not isinstance(job, ScoringJob) or job.running:
        return False
    studio.scoring = None
    if job.error is not None:
        studio.scoring_error = ui.problem(
            job.error,
            "scoring the settings on your data",
            hint="Check the data's mapping in step 3, or choose the settings yourself in step 2.",
        )
        return True
    if job.result is None or studio.recovery is None:
        return True  # stopped
    if state.spec_key(studio.recovery.spec) != job.spec_key:
        return True  # the person changed a setting meanwhile: their choice wins
    if _fed_key(studio) != job.fed:
        return True  # other data (or entries) opened meanwhile: found on data now gone
    studio.recovery.apply_search(job.result)
    if job.result.best is None:  # nothing could be scored: nothing is found either
        studio.scoring_error = ui.Problem(
            f"{job.result.message.rstrip('.')}. Check the data's mapping in step 3, or choose "
            "the settings yourself in step 2."
        )
        return True
    studio.scored_names.update(job.result.names)
    return True
