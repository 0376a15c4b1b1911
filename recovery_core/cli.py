"""The `recovery` command: inspect, codegen, recover.

Exit codes: 0 success, 1 a verification failed, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import os
import sys
import threading
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from recovery_core import humanize
from recovery_core.errors import RecoveryError, printable

if TYPE_CHECKING:  # for the annotations; the recover command imports it when it runs
    from recovery_core.recover import RecoverOptions


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recovery",
        description="Turn a bare PyTorch state dict back into a working, retrained, exported model.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    inspect = sub.add_parser(
        "inspect", help="show the tensors, the inferred layer tree and hyperparameters"
    )
    inspect.add_argument(
        "checkpoint", help=".pt/.pth/.bin/.ckpt/.safetensors file, sharded folder or *.index.json"
    )
    inspect.add_argument(
        "--json", action="store_true", help="print one JSON object instead of tables"
    )

    codegen = sub.add_parser(
        "codegen", help="write a standalone Python file defining RecoveredModel"
    )
    codegen.add_argument("checkpoint")
    codegen.add_argument("-o", "--output", required=True, help="where to write the .py file")
    codegen.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="fix a hidden hyperparameter",
    )

    _add_recover(sub)
    return parser


def _add_recover(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The recover command: what to read and write, what to fix and train."""
    recover = sub.add_parser(
        "recover",
        help="find hidden hyperparameters on data, retrain chosen layers, export verified files",
    )
    recover.add_argument("checkpoint")
    recover.add_argument(
        "--data",
        required=True,
        help="dataset: torch-saved dict/tuple/TensorDataset, .safetensors or .npz",
    )
    recover.add_argument(
        "--out", required=True, help="TorchScript file to write (other files go beside it)"
    )
    recover.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="KEY",
        help="dataset entry fed to the model (repeat, in order)",
    )
    recover.add_argument(
        "--target", default=None, metavar="KEY", help="dataset entry the output is compared with"
    )
    recover.add_argument(
        "--unfreeze",
        action="append",
        default=[],
        metavar="PATTERN",
        help="module path, prefix or glob to train (default: the output layer)",
    )
    recover.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="fix a hidden hyperparameter (not searched)",
    )
    _add_run_arguments(recover)


def _add_run_arguments(recover: argparse.ArgumentParser) -> None:
    """How it trains, searches and reports."""
    recover.add_argument(
        "--method", default="auto", choices=["auto", "lstsq", "adam", "adamw", "sgd"]
    )
    recover.add_argument("--epochs", type=int, default=20)
    recover.add_argument("--lr", type=float, default=1e-3)
    recover.add_argument("--batch-size", type=int, default=32)
    recover.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    recover.add_argument("--seed", type=int, default=0)
    recover.add_argument(
        "--loss",
        default=None,
        choices=["mse", "cross_entropy"],
        help="override the loss guessed from the target",
    )
    recover.add_argument(
        "--search-budget",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="time allowed for scoring hidden hyperparameters",
    )
    recover.add_argument("--report", default=None, help="also write the JSON report here")
    recover.add_argument(
        "--plan",
        default=None,
        metavar="PLAN.json",
        help="replay a recovery plan saved by the dashboard: its settings, trained layers, "
        "training settings and data mapping replace the options above",
    )
    recover.add_argument(
        "--formats",
        default=None,
        metavar="LIST",
        help="write only these besides the TorchScript file, comma-separated, from: "
        "torch.export, state_dict, safetensors, code (default: all)",
    )
    recover.add_argument(
        "--wiring",
        default=None,
        metavar="NAME",
        help="use this forward (a name `inspect` lists under FORWARD) instead of scoring them",
    )


def parse_assignments(items: Sequence[str]) -> dict[str, object]:
    """`nhead=4`, `batch_first=false`, `activation=gelu` -> typed values."""
    values: dict[str, object] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise RecoveryError(f"--set expects NAME=VALUE, got {item!r}")
        values[name.strip()] = parse_value(raw.strip())
    return values


def parse_value(raw: str) -> object:
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def _inspect(args: argparse.Namespace) -> int:
    from recovery_core.inspect import inspect_checkpoint

    report = inspect_checkpoint(args.checkpoint)
    if args.json:
        import json

        json.dump(report.to_json(), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        # Line by line, as the rows come: 100,000 rows are never one string in memory.
        write = sys.stdout.write
        for line in report.text_lines():
            # An all-printable line needs no escapes (printable() walks each character).
            write((line if line.isprintable() else printable(line, keep_newlines=True)) + "\n")
    return 0


def _codegen(args: argparse.Namespace) -> int:
    from recovery_core.export.exporter import refuse_overwriting_input, write_atomic
    from recovery_core.infer.retype import apply_type_choices
    from recovery_core.inspect import inspect_checkpoint
    from recovery_core.model.code_check import check_generated_code
    from recovery_core.model.codegen import generate_code

    refuse_overwriting_input([args.output], args.checkpoint)
    inspection = inspect_checkpoint(args.checkpoint)
    # `--set norm=PReLU` picks one of a module's alternative types; the rest are values.
    spec, values = apply_type_choices(
        inspection.spec, parse_assignments(args.set), inspection.checkpoint.shapes
    )
    spec = spec.with_values(values)
    source = generate_code(spec)
    fit = check_generated_code(spec, inspection.checkpoint)
    if not fit.ok:  # never write a file whose strict load would fail
        print(f"error: the generated model would not load: {fit.message}", file=sys.stderr)
        return 1
    # Every file read (shards, index), not just the path given; written atomically.
    refuse_overwriting_input([args.output], [args.checkpoint, *inspection.checkpoint.source_files])
    write_atomic(args.output, source.encode())
    print(
        f"wrote {args.output} ({len(source.splitlines())} lines): class RecoveredModel",
        file=sys.stderr,
    )
    return 0


def _recover(args: argparse.Namespace) -> int:
    from recovery_core.recover import RecoverOptions, open_files, recover

    options = RecoverOptions(
        inputs=tuple(args.input),
        target=args.target,
        unfreeze=tuple(args.unfreeze),
        fixed=parse_assignments(args.set),
        method=args.method,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
        loss=args.loss,
        search_budget_seconds=args.search_budget,
        wiring=args.wiring,
        formats=None if args.formats is None else tuple(f for f in args.formats.split(",") if f),
    )
    if args.plan:
        options = _plan_options(args, options)
    # The files are read before torch is imported (see recover.open_files). Then torch
    # and the library's steps are loaded, and their objects frozen: modules never become
    # garbage, and a full collection that walks torch's ~170,000 objects costs 0.1-0.25 s
    # (one fell while the library was imported, after torch).
    opened = open_files(args.checkpoint, args.data, args.out, options, report_path=args.report)
    import torch  # noqa: F401

    gc.freeze()
    import recovery_core.session  # noqa: F401

    gc.freeze()
    result = recover(
        args.checkpoint,
        args.data,
        args.out,
        options,
        report_path=args.report,
        log=lambda line: print(printable(line), file=sys.stderr, flush=True),
        progress_bar=sys.stderr.isatty(),
        opened=opened,
    )
    print(printable(result.summary(), keep_newlines=True))
    return 0 if result.passed else 1


def _plan_options(args: argparse.Namespace, options: RecoverOptions) -> RecoverOptions:
    """--plan: the plan's choices, checked against the checkpoint's hash; where to run and
    what to write still come from the command line."""
    from recovery_core import plan as recovery_plan

    try:
        with open(args.plan, "rb") as f:
            text = f.read(recovery_plan.MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise recovery_plan.PlanError(
            f"cannot read the plan {args.plan!r} ({exc.strerror}); check the path"
        ) from exc
    plan = recovery_plan.RecoveryPlan.from_json(text)
    plan.check_checkpoint(recovery_plan.file_sha256(args.checkpoint))
    return recovery_plan.recover_options(
        plan,
        device=args.device,
        search_budget_seconds=args.search_budget,
        formats=options.formats,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # torch notes, on each Transformer it builds, that a fast path for padded batches is
    # off ("enable_nested_tensor is True, but ..."): nothing here uses it, and a person
    # reading this command's output would take it for a fault. The process is the CLI's.
    warnings.filterwarnings("ignore", message="enable_nested_tensor is True", category=UserWarning)
    handlers = {"inspect": _inspect, "codegen": _codegen, "recover": _recover}
    try:
        return handlers[args.command](args)
    except RecoveryError as error:
        _error_line(str(error))
        return 2
    except BrokenPipeError:
        # The reader of our output left (`recovery inspect big.pt | head`): nothing is
        # wrong, and nothing more can be said there. Later writes go nowhere.
        with contextlib.suppress(OSError, ValueError):  # a stream without a descriptor
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as error:
        _error_line(f"{error.strerror or type(error).__name__}: {error.filename or ''}")
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - one line, never a traceback, for any input
        _error_line(f"could not process the input ({type(error).__name__}: {error})")
        return 2


def run() -> NoReturn:
    """The `recovery` command as a process (and `python -m recovery_core`): `main`, then an
    exit without the interpreter's teardown. By then every file is written, closed and
    verified; the output streams are flushed, the threads joined and the exit handlers
    run (logging, temporary folders) as at any exit. What is skipped is the modules' and
    torch's libraries' teardown: ~0.1 s after a recover, a sixth of its work above
    `import torch` on a small model. `main` itself stays an ordinary call for Python."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more to say
            pass
    shutdown = getattr(threading, "_shutdown", None)  # joins threads as an exit does
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    os._exit(code)


def _error_line(message: str) -> None:
    """One line on stderr; text from a file cannot drive the terminal."""
    print(f"error: {printable(humanize.one_line(message))[:2000]}", file=sys.stderr)


if __name__ == "__main__":
    run()
