"""The careful hand-written script for the forward-recovery benchmark (section 8).

What an engineer who knows the architecture writes: the model class, the original
weights, the frozen trunk's features computed once, the output layer solved by least
squares, `torch.jit.script`, save, reload and check. Run as a whole process:

    python benchmarks/careful_seq2seq.py FAMILY WEIGHTS DATA OUT.pt

FAMILY is a key of benchmarks/families.py. Prints `RESULT {json}`: the loss before and
after, and the seconds of its one "epoch" (the trunk pass and the solve).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from families import FAMILIES  # noqa: E402

from tests.forward_zoo import FORWARD_BY_NAME  # noqa: E402  (the model code the user has)


def main(family_name: str, weights: str, data: str, out: str) -> None:
    family = FAMILIES[family_name]
    model = FORWARD_BY_NAME[family.case].build().eval()
    model.load_state_dict(torch.load(weights, weights_only=True))
    dataset = torch.load(data, weights_only=True)
    src, tgt, y = dataset["src"], dataset["tgt"], dataset["y"]
    head = model.get_submodule(family.head)
    assert isinstance(head, torch.nn.Linear)
    started = time.perf_counter()
    captured: dict[str, torch.Tensor] = {}
    hook = head.register_forward_pre_hook(lambda _m, args: captured.setdefault("x", args[0]))
    with torch.no_grad():
        before = torch.nn.functional.mse_loss(model(src, tgt), y).item()
    hook.remove()
    features = captured["x"].reshape(-1, head.in_features).double()
    design = torch.cat([features, torch.ones(len(features), 1, dtype=torch.float64)], 1)
    solution = torch.linalg.lstsq(design, y.reshape(-1, head.out_features).double()).solution
    with torch.no_grad():
        head.weight.copy_(solution[:-1].T.float())
        head.bias.copy_(solution[-1].float())
        after = torch.nn.functional.mse_loss(model(src, tgt), y).item()
    epoch = time.perf_counter() - started
    torch.jit.script(model).save(out)
    reloaded = torch.jit.load(out)
    two_src, two_tgt = (x.narrow(family.batch_dim, 0, 2) for x in (src, tgt))
    with torch.no_grad():
        assert torch.allclose(reloaded(two_src, two_tgt), model(two_src, two_tgt))
    print("RESULT " + json.dumps({"before": before, "after": after, "epoch_seconds": [epoch]}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
