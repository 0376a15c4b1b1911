"""Section 10 by hand: the search on data new to the model, over the forward zoo.

    python benchmarks/new_task_search.py [--samples 128] [CASE ...]
    python benchmarks/new_task_search.py --labels 1024 [CASE ...]

For every case of `tests/forward_zoo.py` with an output layer of its own, the search
(`score_candidates`, as it ships, one thread) runs twice on the case's model: on its own
outputs plus noise (the data it fits), and on the same inputs with targets from another
output layer (the head's tensors redrawn at their own mean and spread: a task the model
was not trained for, which retraining the head fits as well). A row says whether the
values found on the new task are the ones found on the own outputs (names tied on
either side left out), the output layer the search refitted, the best loss on the new
task (the noise's level, ~1e-4, when the trunk is the true one) and the seconds of each.

With `--labels N`, the new task is class labels instead (cross-entropy, on N samples):
the other output layer's most likely class at each output row (`ForwardCase.new_labels`);
cases whose output has one value per row (no classes) are left out. The own outputs
are searched as above.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch.nn.functional as F  # noqa: E402

from recovery_core.fit.search import SearchResult, score_candidates  # noqa: E402
from recovery_core.infer import infer_spec  # noqa: E402
from recovery_core.io.checkpoint import Checkpoint  # noqa: E402
from recovery_core.io.data import LossFunction  # noqa: E402
from tests.forward_zoo import FORWARD_ZOO, ForwardCase  # noqa: E402


def searched(
    case: ForwardCase, samples: int, labels: int = 0
) -> tuple[SearchResult, float, SearchResult, float]:
    """The search on the case's own outputs and on a new task (class labels of `labels`
    samples when given), with the seconds of each."""
    model = case.make()
    weights = model.state_dict()
    spec = infer_spec(Checkpoint.from_state_dict(weights))
    new_task = (
        (case.new_labels(model, labels), LossFunction("cross_entropy"))
        if labels
        else (case.new_task_data(model, samples), F.mse_loss)
    )
    runs = []
    for data, loss in ((case.data(model, samples), F.mse_loss), new_task):
        *inputs, target = data.values()
        started = time.monotonic()
        result = score_candidates(spec, weights, tuple(inputs), target, loss, threads=1)
        runs.append((result, time.monotonic() - started))
    (own, own_seconds), (new, new_seconds) = runs
    return own, own_seconds, new, new_seconds


def row(case: ForwardCase, samples: int, labels: int = 0) -> str:
    own, own_seconds, new, new_seconds = searched(case, samples, labels)
    decided = set(own.best_values) - set(own.tied_names) - set(new.tied_names)
    wrong = sorted(n for n in decided if new.best_values.get(n) != own.best_values[n])
    found = "same values" if new.best is not None and not wrong else f"differs: {', '.join(wrong)}"
    loss = f"{new.best.loss:.3g}" if new.best is not None else "none ran"
    head = new.refitted_head if new.refitted_head is not None else "-"
    return f"| {case.name} | {found} | {head} | {loss} | {own_seconds:.1f} | {new_seconds:.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--labels", type=int, default=0, help="new task: class labels")
    parser.add_argument("cases", nargs="*", help="forward zoo case names (default: all)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # torch's fast-path notices
    cases = [c for c in FORWARD_ZOO if c.head and (not args.cases or c.name in args.cases)]
    if args.labels:
        cases = [c for c in cases if _classes(c) > 1]
    print("| case | new task: values found | head refitted | best loss (new) | s own | s new |")
    print("|---|---|---|---|---|---|")
    for case in cases:
        print(row(case, args.samples, args.labels), flush=True)


def _classes(case: ForwardCase) -> int:
    """Values per output row of the case's model: its classes, as labels would read them."""
    model = case.make()
    *_, target = case.data(model, 2).values()
    return target.shape[-1]


if __name__ == "__main__":
    main()
