"""Everything the dashboard remembers, in one place.

Two kinds of memory, kept apart on purpose:
- shared across browser sessions (`st.cache_resource`): only immutable results —
  the loaded `Checkpoint` with its inferred `ArchSpec` (frozen dataclasses), keyed by
  a digest of the file, and rebuild checks keyed by digest + hyperparameter values
  (their tensors are read from the file on demand, never handed out for changing);
- per session: one `Studio` object holding the choices, the dataset, the models that
  train and the run history. Nothing in it is shared between people. It is kept on the
  server under a random token that the page's URL carries (`?session=…`), so a reload
  finds it again; a session not seen for `SESSION_TTL_SECONDS` is let go.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import os
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st
import torch
from streamlit import runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx

import recovery_core as rc

if TYPE_CHECKING:  # both import this module: for the annotations only
    from dashboard.exporting import ExportJob
    from dashboard.scoring import ScoringJob
    from dashboard.ui import Problem

REPO = Path(__file__).resolve().parents[1]
DEMO_CHECKPOINT = REPO / "assets" / "demo_checkpoint.pt"
DEMO_DATA = REPO / "assets" / "demo_data.pt"

# Session-state keys (widget keys live next to their widgets, prefixed by step).
STUDIO = "studio"
HOLDER = "studio_holder"
SESSION_PARAM = "session"  # the URL's query parameter holding this session's token
# How long the server keeps a session nobody has looked at (a reload within it restores it).
SESSION_TTL_SECONDS = float(os.environ.get("RECOVERY_SESSION_TTL", 4 * 3600))
MAX_KEPT_SESSIONS = 64  # beyond this, the longest-unseen session is let go first
# Part of the data held out for evaluation: the chart's main line, the baseline and the
# verdict are all this part's loss, so a run cannot look good by memorising its batches.
HELD_OUT_FRACTION = 0.2


# ---------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    """Where a file comes from. `key` identifies its content; `label` is safe to show."""

    kind: str  # "demo", "upload" or "path"
    key: str
    label: str
    payload: str | bytes | None = field(repr=False, compare=False, default=None)


@functools.cache
def _file_digest(path: str) -> str:
    """Digest of a small bundled file (read once per process)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def demo_source() -> Source:
    return Source(
        "demo",
        "demo:" + _file_digest(str(DEMO_CHECKPOINT)),
        DEMO_CHECKPOINT.name,
        str(DEMO_CHECKPOINT),
    )


def demo_data_source() -> Source:
    return Source("demo", "demo:" + _file_digest(str(DEMO_DATA)), DEMO_DATA.name, str(DEMO_DATA))


def upload_source(name: str, data: bytes) -> Source:
    # The client's file name is only a label: the library writes the bytes under a
    # generated name in a private folder.
    return Source("upload", "upload:" + hashlib.sha256(data).hexdigest(), Path(name).name, data)


def server_paths_allowed() -> bool:
    """Opening files by their path on the server suits a personal, local server only: any
    visitor could probe which paths exist. Off unless RECOVERY_SERVER_PATHS=on."""
    return os.environ.get("RECOVERY_SERVER_PATHS", "off").lower() in ("on", "1", "true", "yes")


def path_source(path: str) -> Source:
    """A file on the server's disk, read lazily. Keyed by path, size and mtime (not its bytes:
    hashing a 10 GB file on every rerun would defeat the lazy reading)."""
    real = os.path.realpath(os.path.expanduser(path.strip()))
    try:
        st_ = os.stat(real)
        stamp = f"{st_.st_size}:{st_.st_mtime_ns}"
    except OSError:
        stamp = "missing"
    return Source("path", f"path:{real}:{stamp}", os.path.basename(real) or real, real)


# ---------------------------------------------------------------- shared, immutable caches


@dataclass(frozen=True)
class Opened:
    """A checkpoint and what was inferred from it. Immutable, so sessions can share it."""

    source: Source
    checkpoint: rc.Checkpoint
    spec: rc.ArchSpec
    inspection: rc.Inspection  # the key/shape table with parameter/buffer roles


@st.cache_resource(max_entries=16, show_spinner="Reading the checkpoint and inferring its layers…")
def _open_checkpoint(key: str, _source: Source) -> Opened:
    checkpoint = rc.load_checkpoint(_payload(_source), name=_source.label)
    spec = rc.infer_spec(checkpoint)
    # Keep no uploaded bytes in the shared cache: the checkpoint reads from its own copy.
    # A path (demo or server file) stays: a saved plan names the file by its hash.
    kept = _source.payload if isinstance(_source.payload, str) else None
    return Opened(replace(_source, payload=kept), checkpoint, spec, rc.describe(checkpoint, spec))


def open_checkpoint(source: Source) -> Opened:
    return _open_checkpoint(source.key, source)


def open_dataset(source: Source) -> rc.Dataset:
    """Not shared between sessions: a dataset's tensors could be changed in place, so each
    session reads its own (once: the Studio keeps it)."""
    with st.spinner("Reading the dataset…"):
        return rc.load_dataset(_payload(source), name=source.label)


def _payload(source: Source) -> str | bytes:
    """The path or bytes to read; a source kept after reading has none (read it again)."""
    if source.payload is None:
        raise ValueError(f"{source.label} is no longer held in memory; open it again")
    return source.payload


def spec_key(spec: rc.ArchSpec) -> str:
    return repr(tuple((hp.name, hp.value) for hp in spec.hyperparameters))


@st.cache_resource(max_entries=64, show_spinner="Rebuilding the model…")
def _rebuild_status(
    key: str, values: str, _spec: rc.ArchSpec, _checkpoint: rc.Checkpoint
) -> rc.RebuildStatus:
    return rc.check_rebuild(_spec, _checkpoint)


def rebuild_status(opened: Opened, spec: rc.ArchSpec) -> rc.RebuildStatus:
    return _rebuild_status(opened.source.key, spec_key(spec), spec, opened.checkpoint)


# Files up to this size are scanned for NaN/Inf as soon as they open (one pass over the
# values, shared by every session); bigger ones only when the person asks.
VALUE_SCAN_BYTES = 256 * 2**20


@st.cache_resource(max_entries=16, show_spinner="Checking every value for NaN and infinity…")
def _value_stats(key: str, _checkpoint: rc.Checkpoint) -> tuple[rc.TensorStats, ...]:
    return tuple(_checkpoint.stats_all())


def value_stats(opened: Opened) -> tuple[rc.TensorStats, ...]:
    return _value_stats(opened.source.key, opened.checkpoint)


# ---------------------------------------------------------------- per session


@dataclass
class RunRecord:
    """One training run and everything needed to compare and export it."""

    number: int
    run: rc.TrainingRun
    spec: rc.ArchSpec
    plan: rc.FreezePlan
    config: rc.TrainingConfig  # how it trains: method, rate, epochs, batch, seed, held out
    baseline: float
    # The data the run trained on, as it was then (step 3 may change afterwards).
    mapping: rc.DataMapping | None = None
    data_name: str | None = None
    example_inputs: tuple[torch.Tensor, ...] = ()  # two samples: what exports are checked on
    states: dict[str, str] = field(default_factory=dict)  # each free setting's state then
    unchecked: tuple[str, ...] = ()  # settings the data could have checked and did not
    # The search that found settings ranked them with this output layer refitted (the
    # data was new to the model; None: with the original weights).
    refitted_head: str | None = None
    target_scale: float = 1.0  # the target's mean square, what a loss is small against
    started: float = field(default_factory=time.time)
    steps: list[int] = field(default_factory=list)  # every training step (the faint line)
    losses: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)  # evaluation points (the main line)
    eval_losses: list[float] = field(default_factory=list)
    finished_at: float | None = None
    announced: bool = False  # the page was redrawn once after the run ended

    @property
    def name(self) -> str:
        return f"Run {self.number}"

    @property
    def held_out(self) -> float:
        """The fraction of the data it was evaluated on."""
        return self.config.val_fraction

    def poll(self) -> None:
        """Collect the losses published since the last poll (cheap; safe while it runs)."""
        for event in self.run.events_since(len(self.steps)):
            self.steps.append(event.step)
            self.losses.append(float(event.loss))
            monitor = getattr(event, "monitor_loss", None)
            if monitor is None:
                monitor = event.eval_loss
            if monitor is not None:
                self.eval_steps.append(event.step)
                self.eval_losses.append(float(monitor))
        if self.finished_at is None and not self.running:
            self.finished_at = time.time()

    @property
    def unverified(self) -> tuple[str, ...]:
        """Settings the run used unchecked although the data could have checked them."""
        return self.unchecked

    @property
    def running(self) -> bool:
        return self.run.status in ("idle", "running")

    @property
    def result(self) -> rc.TrainingResult | None:
        return None if self.running else self.run.result

    @property
    def outcome(self) -> rc.TrainingResult:
        """The result of a run from `Studio.finished_runs()`, which all have one."""
        result = self.result
        if result is None:
            raise ValueError(f"{self.name} has no result")
        return result

    @property
    def seconds(self) -> float:
        return (self.finished_at or time.time()) - self.started


@dataclass
class Studio:
    """One browser session's work. Never shared: each session gets its own.

    The pipeline's state (checkpoint, spec with the person's values, dataset, mapping,
    the search's result) lives in one `rc.session.Recovery`; pages read it and call its
    steps. The Studio keeps what is the page's own: the file opened, errors to show, the
    ticked layers, the training settings, the runs to compare and the background jobs."""

    opened: Opened | None = None  # the file and its table (shared, immutable)
    recovery: rc.session.Recovery | None = None  # for `opened`: this session's own
    load_error: Problem | None = None
    handled_uploads: set[str] = field(default_factory=set)
    dataset_source: Source | None = None  # where the recovery's dataset came from
    data_error: Problem | None = None
    baselines: dict[str, float | Exception] = field(default_factory=dict)
    trainable: set[str] | None = None  # ticked module paths; None until first chosen
    freeze_version: int = 0  # bumped by presets, so the checkboxes pick them up
    runs: list[RunRecord] = field(default_factory=list)
    exports: dict[int, rc.ExportBundle] = field(default_factory=dict)  # by run number
    export_jobs: dict[int, ExportJob] = field(default_factory=dict)  # being written, by run
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="recovery-session-"))
    token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    # Hidden settings: the background scoring job, and the person's explicit "use the
    # unverified settings" (without it nothing runs on settings nobody checked).
    scoring: ScoringJob | None = None
    scoring_error: Problem | None = None
    auto_scored: set[str] = field(default_factory=set)  # (spec, data) keys already tried
    scored_names: set[str] = field(default_factory=set)  # settings the data has checked
    accept_unverified: bool = False
    holders: int = 0  # browser sessions showing this Studio now (see _Holder)
    tabs: int = 0  # of them, connected now (see _Tab)
    sessions: set[str] = field(default_factory=set)  # Streamlit session ids that showed it
    # Bumped whenever values that widgets show are set from elsewhere (new data, another
    # checkpoint, a plan): the widgets keyed with it (`widget_key`) are then new ones
    # showing the new values. A browser sends every widget's value back with each run, so
    # a widget kept under its key would put the old value back.
    values_version: int = 0
    plan_message: tuple[str, str | Problem] | None = None  # the last plan load's outcome
    training: rc.plan.TrainingSettings = field(
        default_factory=lambda: rc.plan.TrainingSettings(
            lr=1e-2, epochs=30, val_fraction=HELD_OUT_FRACTION
        )
    )
    forwards: dict[str, tuple[bool, tuple[int, ...] | None, str | None]] = field(
        default_factory=dict
    )
    _seen_spec: rc.ArchSpec | None = field(default=None, repr=False)
    _spec_version: int = 0

    def __post_init__(self) -> None:
        # When Streamlit drops a closed session's state, its runs stop and its files go.
        weakref.finalize(self, _end_session, self.runs, self.workdir)

    # -- the recovery's state, read (its steps change it)

    @property
    def spec(self) -> rc.ArchSpec | None:
        """The inferred spec with this person's choices applied."""
        return self.recovery.spec if self.recovery is not None else None

    @property
    def dataset(self) -> rc.Dataset | None:
        return self.recovery.dataset if self.recovery is not None else None

    @property
    def mapping(self) -> rc.DataMapping | None:
        return self.recovery.mapping if self.recovery is not None else None

    @property
    def search(self) -> rc.SearchResult | None:
        """The last search's result, for the current checkpoint."""
        return self.recovery.searched if self.recovery is not None else None

    @property
    def spec_version(self) -> int:
        """Changes whenever the spec does, so the hyperparameter widgets pick it up."""
        if self.spec is not self._seen_spec:
            self._seen_spec, self._spec_version = self.spec, self._spec_version + 1
        return self._spec_version

    # -- checkpoint

    def use(self, opened: Opened) -> None:
        """Switch to another checkpoint: everything derived from the old one is dropped
        (the dataset stays, unless the demo brings its own)."""
        self.stop_all()
        kept = self.recovery if opened.source.kind != "demo" else None
        self.opened = opened
        self.recovery = rc.session.Recovery(opened.checkpoint, opened.spec, opened.source.label)
        if kept is not None and kept.dataset is not None:
            self.recovery.use_data(kept.dataset, kept.data_name)
        self.load_error = None
        self.scoring, self.scoring_error = None, None
        self.auto_scored.clear()
        self.scored_names.clear()
        self.accept_unverified = False
        self.forwards.clear()
        self.baselines.clear()
        self.trainable = None
        self.runs.clear()
        self.exports.clear()
        self.export_jobs.clear()  # a job still writing finishes into its own folder, unseen
        if opened.source.kind == "demo":
            self.dataset_source, self.data_error = None, None

    # -- data

    @property
    def held_out(self) -> float:
        """The fraction held out for evaluation (0 when the data is too small to split)."""
        if self.recovery is None:
            return 0.0
        return self.recovery.held_out(self.training.val_fraction)

    def baseline_key(self) -> str:
        assert self.spec is not None
        return f"{spec_key(self.spec)}|{self.mapping!r}|{self.held_out}|{self.training.seed}"

    def baseline(self) -> float:
        """Loss with the original weights on the held-out data; once per spec and mapping."""
        assert self.recovery is not None and self.mapping is not None
        key = self.baseline_key()
        if key not in self.baselines:  # failures are kept too: no recomputing per redraw
            try:
                self.baselines[key] = self.recovery.baseline(self.held_out, self.training.seed)
            except Exception as exc:
                self.baselines[key] = exc
        value = self.baselines[key]
        if isinstance(value, Exception):
            raise value
        return value

    def forward_on_data(self) -> tuple[bool, tuple[int, ...] | None, str | None]:
        """Does the rebuilt model run on two of the data's own examples? (ok, output shape,
        the error in its own words); once per spec and mapping."""
        assert self.recovery is not None and self.spec is not None
        key = f"{spec_key(self.spec)}|{self.mapping!r}"
        if key not in self.forwards:
            self.forwards[key] = self.recovery.runs_on_data()
        return self.forwards[key]

    # -- hidden settings

    def states(self) -> dict[str, str]:
        """Each free setting's state. A setting the data was scored on but could not tell
        apart (any value gives the same loss) counts as found: the data checked it."""
        assert self.spec is not None
        scored = self.scored_names
        out = {}
        for hp in self.spec.free:
            st_ = rc.plan.setting_state(hp) or rc.plan.CHOSEN
            if st_ == rc.plan.UNVERIFIED and hp.name in scored:
                st_ = rc.plan.FOUND
            out[hp.name] = st_
        return out

    def unchecked(self) -> tuple[str, ...]:
        """Unverified settings the data could decide: what must be scored (or accepted)."""
        if self.spec is None:
            return ()
        states = self.states()
        return tuple(
            n for n in rc.searchable_names(self.spec) if states.get(n) == rc.plan.UNVERIFIED
        )

    def settings_ok(self) -> bool:
        """May baseline, training and export run? Only on checked settings, or when the
        person chose to use the unverified ones."""
        return self.accept_unverified or not self.unchecked()

    @property
    def scoring_running(self) -> bool:
        job = self.scoring
        return job is not None and getattr(job, "running", False)

    # -- runs

    @property
    def active_run(self) -> RunRecord | None:
        return next((r for r in self.runs if r.running), None)

    def finished_runs(self) -> list[RunRecord]:
        return [r for r in self.runs if not r.running and r.result is not None]

    def stop_all(self) -> None:
        for record in self.runs:
            if record.running:
                record.run.stop()
        if self.scoring is not None:
            self.scoring.stop()


def _end_session(runs: list[RunRecord], workdir: str) -> None:
    """When a session's state is dropped: stop its training threads, delete its exports."""
    for record in runs:
        try:
            record.run.stop()
        except Exception:  # noqa: BLE001 - best effort at teardown
            pass
    shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class _Kept:
    studio: Studio
    last_seen: float


@st.cache_resource
def _kept_sessions() -> tuple[dict[str, _Kept], threading.Lock]:
    """token -> session, for every browser session of this server process."""
    return {}, threading.Lock()


def _keep(s: Studio) -> None:
    """Remember this session under its token; let go of the ones nobody has seen in a while
    (when no open tab holds them either, their runs stop and their files go)."""
    kept, lock = _kept_sessions()
    now = time.time()
    with lock:
        kept[s.token] = _Kept(s, now)
        for token in [t for t, k in kept.items() if now - k.last_seen > SESSION_TTL_SECONDS]:
            del kept[token]
        while len(kept) > MAX_KEPT_SESSIONS:
            del kept[min(kept, key=lambda t: kept[t].last_seen)]


def _claim(token: str | None) -> Studio | None:
    if not token:
        return None
    kept, lock = _kept_sessions()
    with lock:
        entry = kept.get(token)
        if entry is None or time.time() - entry.last_seen > SESSION_TTL_SECONDS:
            return None
        return entry.studio


class _Holder:
    """Lives in one browser session's state. When the last tab holding a Studio is gone
    (Streamlit drops a closed tab's state after `server.disconnectedSessionTTL`), the
    Studio's training and scoring stop: nobody is watching. Its results stay kept for a
    reload until it expires."""

    def __init__(self, studio: Studio) -> None:
        studio.holders += 1
        weakref.finalize(self, _released, studio)


def _released(studio: Studio) -> None:
    studio.holders -= 1
    if studio.holders <= 0:
        studio.stop_all()


class _Tab:
    """One connected browser tab showing a Studio. Streamlit releases it as soon as the
    tab's connection closes (`_tab_closed`). The session itself is dropped (and `_Holder`
    with it) only when Streamlit next expires closed sessions, which it does when another
    session disconnects: on a quiet server, a closed tab's training would run on for
    nobody until it ended."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        with _tabs_lock:
            studio.tabs += 1


_tabs_lock = threading.Lock()


def _tab_closed(tab: _Tab) -> None:
    """A tab's connection closed: unless a tab shows its Studio again within the time
    Streamlit keeps a closed tab for reconnecting (a reload, a network blip), its training
    and scoring stop. Its results stay kept for a reload."""
    with _tabs_lock:
        tab.studio.tabs -= 1
    grace = float(st.get_option("server.disconnectedSessionTTL"))
    timer = threading.Timer(grace, _stop_if_unwatched, args=(tab.studio,))
    timer.daemon = True
    timer.start()


def _stop_if_unwatched(studio: Studio) -> None:
    with _tabs_lock:
        unwatched = studio.tabs <= 0
    # A tab back after a network blip is connected again without running the page (the
    # browser reruns it only when a part of it refreshes itself), so it is not counted
    # in `tabs`: ask the server whether one of the Studio's sessions is connected.
    if unwatched and not any(map(_connected_now, list(studio.sessions))):
        studio.stop_all()
        # Streamlit no longer collects after every run (dashboard/serve.py): what the
        # closed tab held in reference cycles is freed now, not at some later collection.
        gc.collect()


def _connected_now(session_id: str) -> bool:
    return runtime.exists() and runtime.get_instance().is_active_session(session_id)


@st.cache_resource(scope="session", on_release=_tab_closed, show_spinner=False)
def _connected(token: str, _studio: Studio) -> _Tab:
    return _Tab(_studio)


def widget_key(studio: Studio, name: str) -> str:
    """The key of a widget that shows a value of `studio` set elsewhere too (see
    `Studio.values_version`)."""
    return f"{name}@{studio.values_version}"


def studio() -> Studio:
    """This session's Studio: the one its URL's token names (a reload), else a new one."""
    if STUDIO not in st.session_state:
        s = _claim(st.query_params.get(SESSION_PARAM)) or Studio()
        st.session_state[STUDIO] = s
        st.session_state[HOLDER] = _Holder(s)
    s = st.session_state[STUDIO]
    ctx = get_script_run_ctx()
    if ctx is not None:
        s.sessions.add(ctx.session_id)
    _connected(s.token, s)
    _keep(s)
    if st.query_params.get(SESSION_PARAM) != s.token:
        st.query_params[SESSION_PARAM] = s.token
    return s
