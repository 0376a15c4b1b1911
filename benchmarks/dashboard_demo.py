"""Section 9 by hand: the dashboard on the bundled demo, where people wait (issue 14.6).

    python benchmarks/dashboard_demo.py [--rounds 3] [--only scoring,impossible,browser]

Each part is measured against its baseline in the same run, one fresh process after the
other, round after round (interleaved), with `uptime` before and after:

- scoring: the dashboard's automatic scoring of the demo's hidden values, as the page
  runs it (`AppTest` on dashboard/app.py: the first run opens the demo, maps its data and
  starts the job; the time is the search the job runs, and the wait from the first run's
  start to the ranking applied), against the command line's search (`Recovery.search`,
  what `recovery recover` runs) in a process of its own, on the same checkpoint and data.
  Both report wall and CPU time (getrusage, the whole process: its other threads are idle
  meanwhile), the combinations scored and the samples the finalists were scored on.
- impossible: a CNN that reads 3 channels given 5-channel images, uploaded in the app
  (`AppTest`): from the data's upload (the run that maps it and starts the search) to the
  error on the page; against `score_candidates` on the same tensors in-process.
- browser: a fresh `streamlit run` server and Debian's Chromium (tests/e2e harness): the
  first visitor's page load to the tensor table, a second visitor's, then (first visitor)
  a short training run and the export: from the click on "Export and verify" to the
  TorchScript download offered, downloaded and loaded with torch.jit.load. Baseline for
  the export: the library writing and checking the TorchScript file alone
  (`Exporter.run("torchscript")`) in the benchmark's own process.

The figures are printed as one JSON line per measurement and a summary table at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
APP = str(ROOT / "dashboard" / "app.py")
DEMO = ROOT / "assets" / "demo_checkpoint.pt"
DEMO_DATA = ROOT / "assets" / "demo_data.pt"
PARTS = ("scoring", "impossible", "first_run", "browser")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed_scorer(record: dict[str, Any]) -> None:
    """Time every search this process runs (wall and process CPU), where it runs."""
    from recovery_core.session import RecoveryData

    scorer = RecoveryData.scorer

    def timed(self: Any, names: Any, **options: Any) -> Any:
        search = scorer(self, names, **options)

        def run() -> Any:
            wall, cpu = time.perf_counter(), _cpu()
            result = search()
            record.update(
                search_wall=time.perf_counter() - wall,
                search_cpu=_cpu() - cpu,
                options={k: v for k, v in options.items() if k != "progress"},
            )
            return result

        return run

    RecoveryData.scorer = timed  # type: ignore[method-assign]


def _found(result: Any) -> dict[str, Any]:
    best = result.best
    return {
        "scored": result.scored,
        "total": result.total,
        "strategy": result.strategy,
        "finalist_samples": None if best is None else best.samples,
        "best_loss": None if best is None else best.loss,
        "best": None if best is None else {k: repr(v) for k, v in result.best_values.items()},
    }


# ---------------------------------------------------------------- children


def child_app_scoring() -> dict[str, Any]:
    """The demo's automatic scoring as the app runs it (AppTest, fresh process)."""
    from streamlit.testing.v1 import AppTest

    record: dict[str, Any] = {}
    _timed_scorer(record)
    started = time.perf_counter()
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    first_run = time.perf_counter() - started
    studio = at.session_state["studio"]
    job = studio.scoring
    assert job is not None, "the demo's scoring did not start by itself"
    job.join()
    at.run()  # the page's next run applies the ranking (a browser's refresh does it)
    assert studio.search is not None and studio.scoring is None
    import torch

    return {
        "kind": "app",
        "first_run": first_run,
        "ranking_shown": time.perf_counter() - started,
        "threads": torch.get_num_threads(),
        **record,
        **_found(studio.search),
    }


def child_cli_scoring() -> dict[str, Any]:
    """The command line's search (`recovery recover` runs `Recovery.search`), fresh process."""
    import torch

    from recovery_core.session import Recovery

    record: dict[str, Any] = {}
    _timed_scorer(record)
    recovery = Recovery.open(str(DEMO))
    recovery.map_data(str(DEMO_DATA))
    result = recovery.search()
    assert result is not None
    return {"kind": "cli", "threads": torch.get_num_threads(), **record, **_found(result)}


def _cnn_files() -> tuple[bytes, bytes]:
    import torch

    torch.manual_seed(0)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(8, 3),
    )  # fmt: skip
    images = {"x": torch.randn(64, 5, 16, 16), "y": torch.randn(64, 3)}
    out = []
    for value in (cnn.state_dict(), images):
        buf = io.BytesIO()
        torch.save(value, buf)
        out.append(buf.getvalue())
    return out[0], out[1]


def child_impossible() -> dict[str, Any]:
    """The CNN given 5-channel images, in the app: from the upload of the data to the
    error on the page (AppTest), and the library's search on the same tensors."""
    import torch
    import torch.nn.functional as F
    from streamlit.testing.v1 import AppTest

    import recovery_core as rc

    weights, data = _cnn_files()
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    studio = at.session_state["studio"]
    if studio.scoring is not None:  # the demo's own scoring: not what is measured
        studio.scoring.stop()
        studio.scoring.join()
    upload = at.sidebar.file_uploader(key="source_upload")
    upload.set_value(("cnn.pt", weights, "application/octet-stream")).run()
    at.switch_page("steps/data.py").run()
    at.file_uploader(key="data_upload").set_value(("i.pt", data, "application/octet-stream"))
    started, cpu = time.perf_counter(), _cpu()
    at.run()  # maps the data, starts the search
    while studio.scoring is not None:
        studio.scoring.join()
        at.run()  # the refresh that shows the outcome
    seconds, cpu = time.perf_counter() - started, _cpu() - cpu
    shown = [e.value for e in at.error if "cannot read (5, 16, 16)" in e.value]
    assert shown, [e.value for e in at.error]
    # The library alone, on the same tensors.
    spec = rc.infer_spec(rc.Checkpoint.from_state_dict(torch.load(io.BytesIO(weights))))
    tensors = torch.load(io.BytesIO(data))
    wall = time.perf_counter()
    result = rc.score_candidates(
        spec, torch.load(io.BytesIO(weights)), (tensors["x"],), tensors["y"], F.mse_loss
    )
    library = time.perf_counter() - wall
    return {
        "kind": "impossible",
        "app_seconds": seconds,
        "app_cpu": cpu,
        "library_seconds": library,
        "message": shown[0][:160],
        "scored": result.scored,
    }


def child_first_run() -> dict[str, Any]:
    """Server side of the first page: a fresh process's first AppTest run (it imports
    torch, pandas and plotly, opens the demo and its data, starts the scoring and draws
    Explore) against a second session's first run in the same process."""
    from streamlit.testing.v1 import AppTest

    out: dict[str, Any] = {"kind": "first_run"}
    for name in ("first", "second"):
        at = AppTest.from_file(APP, default_timeout=120)
        wall, cpu = time.perf_counter(), _cpu()
        at.run()
        out[f"{name}_run"] = time.perf_counter() - wall
        out[f"{name}_run_cpu"] = _cpu() - cpu
        assert at.dataframe, "no tensor table on the first page"
        studio = at.session_state["studio"]
        if studio.scoring is not None:  # not part of the page: stopped for the next one
            studio.scoring.stop()
            studio.scoring.join()
    return out


def child_imports() -> dict[str, Any]:
    """What the first run imports, one after the other in a fresh process (wall each)."""
    out: dict[str, Any] = {"kind": "imports"}
    for module in ("streamlit", "torch", "pandas", "plotly.graph_objects", "dashboard.state",
                   "dashboard.charts"):  # fmt: skip
        wall = time.perf_counter()
        __import__(module)
        out[module] = time.perf_counter() - wall
    return out


CHILDREN = {
    "app": child_app_scoring,
    "cli": child_cli_scoring,
    "impossible": child_impossible,
    "first_run": child_first_run,
    "imports": child_imports,
}


def _child(kind: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        check=False,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(PARTS))
    parser.add_argument("--child", choices=[*CHILDREN, "browser"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = browser_round() if args.child == "browser" else CHILDREN[args.child]()
        print(json.dumps(result))
        return 0
    parts = args.only.split(",")
    rows: list[dict[str, Any]] = []
    print("before:", uptime(), flush=True)
    for n in range(args.rounds):
        order = ["cli", "app"] if n % 2 else ["app", "cli"]  # ABBA: neither always first
        kinds = (order if "scoring" in parts else []) + (
            ["impossible"] if "impossible" in parts else []
        )
        kinds += ["first_run", "imports"] if "first_run" in parts else []
        kinds += ["browser"] if "browser" in parts else []
        for kind in kinds:
            row = {"round": n + 1, "load": os.getloadavg()[0], **_child(kind)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("after:", uptime(), flush=True)
    summary(rows)
    return 0


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def summary(rows: list[dict[str, Any]]) -> None:
    """Median (min-max) of every figure, by kind, and the scoring's per-round ratios."""
    for kind in dict.fromkeys(r["kind"] for r in rows):
        mine = [r for r in rows if r["kind"] == kind]
        for key, value in mine[0].items():
            if isinstance(value, float) and key != "load":
                found = [r[key] for r in mine if isinstance(r.get(key), float)]
                print(f"{kind}, {key}: {_spread(found)}")
    app = [r for r in rows if r["kind"] == "app"]
    cli = [r for r in rows if r["kind"] == "cli"]
    for key in ("search_wall", "search_cpu"):
        ratios = [a[key] / c[key] for a, c in zip(app, cli, strict=False)]
        print(f"scoring, app/cli {key} per round:", " ".join(f"{r:.2f}" for r in ratios))


# Records, from the page's first moment, when the app's script state changes (the
# browser marks the app 'running' while the server runs the script): seconds since the
# navigation began, as performance.now() counts them.
SCRIPT_STATES = """
window.__scriptStates = [];
new MutationObserver(() => {
  const app = document.querySelector("[data-testid='stApp']");
  const state = app && app.getAttribute("data-test-script-state");
  const seen = window.__scriptStates;
  if (state && (!seen.length || seen[seen.length - 1][0] !== state)) {
    seen.push([state, performance.now()]);
  }
}).observe(document, {subtree: true, childList: true, attributes: true});
"""
# The text of the impossible search's message on the page.
CANNOT_READ = "cannot read (5, 16, 16) per sample"


def _first_run(page: Any, after: float) -> tuple[float | None, float | None]:
    """When the first script run after `after` (seconds of the page's clock) began and
    ended, as the browser saw it."""
    states = [(state, t / 1000) for state, t in page.evaluate("() => window.__scriptStates")]
    start = next((t for state, t in states if state == "running" and t >= after), None)
    end = next(
        (t for state, t in states if state == "notRunning" and start is not None and t > start),
        None,
    )
    return start, end


def _visible_after(page: Any, started: float, locator: Any, timeout: float = 120_000) -> float:
    locator.first.wait_for(state="visible", timeout=timeout)
    return time.perf_counter() - started


def _first_visits(browser: Any, url: str) -> tuple[dict[str, Any], Any]:
    """The first visitor's page load to the tensor table and to the demo's ranking shown,
    then a second visitor's load (its ranking is kept by the server)."""
    from tests.e2e.harness import VIEWPORT

    out: dict[str, Any] = {}
    pages = []
    for name in ("first", "second"):
        context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(120_000)
        page.add_init_script(SCRIPT_STATES)
        started = time.perf_counter()
        page.goto(url)
        out[f"{name}_page_loaded"] = time.perf_counter() - started
        main = page.get_by_test_id("stMain")
        out[f"{name}_table"] = _visible_after(page, started, main.get_by_test_id("stDataFrame"))
        status = main.locator(".st-key-settings_status").filter(has_text="found on your data")
        out[f"{name}_ranking"] = _visible_after(page, started, status)
        run = _first_run(page, 0.0)
        out[f"{name}_run_started"], out[f"{name}_run_ended"] = run
        pages.append(page)
    pages[1].context.close()
    return out, pages[0]


def _export(page: Any, target: Path) -> dict[str, Any]:
    """Train the output layer for 2 epochs, then export: click to TorchScript offered,
    downloaded and loaded."""
    import torch

    from tests.e2e.harness import go_to, wait_idle

    main = page.get_by_test_id("stMain")
    go_to(page, "Freeze and train")
    main.get_by_role("button", name="Only the output layer").click()
    wait_idle(page)
    epochs = main.get_by_label("Epochs (passes over the data)")
    epochs.fill("2")
    epochs.press("Enter")
    wait_idle(page)
    main.get_by_role("button", name="Start training").click()
    main.get_by_text(re.compile(r"Run 1 (finished|stopped)")).wait_for(timeout=180_000)
    wait_idle(page)
    go_to(page, "Export")
    started = time.perf_counter()
    main.get_by_role("button", name="Export and verify").click()
    button = main.get_by_test_id("stDownloadButton").filter(has_text=re.compile(r"^recovered\.pt "))
    offered = _visible_after(page, started, button)
    with page.expect_download() as info:
        button.get_by_role("button").click()
    info.value.save_as(target)
    downloaded = time.perf_counter() - started
    data = torch.load(DEMO_DATA, weights_only=True)
    with torch.no_grad():
        out = torch.jit.load(str(target))(data["src"][:2], data["tgt"][:2])
    assert out.shape[0] == 2
    every = re.compile(r"Every (required )?check passed")
    everything = _visible_after(page, started, main.get_by_text(every), timeout=300_000)
    return {
        "export_torchscript": offered,
        "export_downloaded": downloaded,
        "export_everything": everything,
    }


def _impossible_in_browser(browser: Any, url: str) -> dict[str, Any]:
    """A new visitor opens the CNN, then uploads 5-channel images in step 3: from the
    upload to the message on the page."""
    from tests.e2e.harness import choose_checkpoint, go_to, open_page, wait_idle, wait_scored

    weights, data = _cnn_files()
    page = open_page(browser, url)
    page.add_init_script(SCRIPT_STATES)
    page.reload()  # the recorder is in place from the page's first moment
    wait_scored(page)  # the demo's ranking is kept: this visitor's comes at once
    main, sidebar = page.get_by_test_id("stMain"), page.get_by_test_id("stSidebar")
    choose_checkpoint(page, [{"name": "cnn.pt", "mimeType": "application/octet-stream",
                              "buffer": weights}])  # fmt: skip
    sidebar.get_by_text("cnn.pt").first.wait_for(timeout=60_000)
    wait_idle(page)
    go_to(page, "Data and baseline")
    uploads, other = main.locator("input[type=file]"), main.get_by_text("Use other data")
    uploads.or_(other).first.wait_for(state="attached")
    if uploads.count() == 0:  # the box is folded while data is open
        other.click()
    wait_idle(page)
    clock = page.evaluate("() => performance.now()") / 1000
    started = time.perf_counter()
    main.locator("input[type=file]").first.set_input_files(
        files=[{"name": "i.pt", "mimeType": "application/octet-stream", "buffer": data}]
    )
    seconds = _visible_after(page, started, page.get_by_text(CANNOT_READ, exact=False))
    wait_idle(page)
    run_started, run_ended = _first_run(page, clock)
    page.context.close()
    return {
        "impossible_browser": seconds,
        # the upload, until the server runs the page; that run's end (it reran at once)
        "impossible_run_started": None if run_started is None else run_started - clock,
        "impossible_run_ended": None if run_ended is None else run_ended - clock,
    }


def _library_torchscript() -> float:
    """Baseline: the library writing and checking the TorchScript file of the demo after
    one epoch of head training, in this process (what the dashboard's export job runs)."""
    from recovery_core import session
    from recovery_core.plan import TrainingSettings

    recovery = session.Recovery.open(str(DEMO))
    recovery.map_data(str(DEMO_DATA))
    recovery.search()
    recovery.train(TrainingSettings(epochs=1))
    assert recovery.freeze is not None and recovery.result is not None
    example = tuple(t[:2] for t in recovery.tensors()[0])
    with tempfile.TemporaryDirectory() as folder:
        exporter = session.trained_exporter(
            recovery.result.model, example, folder, spec=recovery.spec,
            original=recovery.original, plan=recovery.freeze, report=recovery.report(),
            stem="recovered",
        )  # fmt: skip
        started = time.perf_counter()
        exporter.run("torchscript")
        return time.perf_counter() - started


def browser_round() -> dict[str, Any]:
    """A fresh server: first and second visitor, export, impossible search (browser)."""
    from tests.e2e.harness import chromium, streamlit_server

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        with streamlit_server(Path(folder) / "server.log") as (url, _proc):
            healthy = time.perf_counter() - started
            with chromium() as browser:
                out, page = _first_visits(browser, url)
                out |= _export(page, Path(folder) / "recovered.pt")
                page.context.close()
                out |= _impossible_in_browser(browser, url)
    return {
        "kind": "browser",
        "server_healthy": healthy,
        **out,
        "library_torchscript": _library_torchscript(),
    }


if __name__ == "__main__":
    sys.exit(main())
