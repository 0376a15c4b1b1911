"""The usual hand-written loop for the forward-recovery benchmark (section 8).

What most notebooks do: the model class, the original weights, the trunk frozen with
`requires_grad_(False)` and kept in eval mode (dropout off: the head learns on the
features the model gives at inference), then Adam on the output layer with a full forward
every step (batches of 32 along the model's batch), the full-data MSE after each epoch; it
stops once that is at most TARGET (the careful script's loss plus 1 %) or after
MAX_EPOCHS. Then `torch.jit.script`, save, reload, check.

    python benchmarks/naive_seq2seq.py FAMILY WEIGHTS DATA OUT.pt TARGET MAX_EPOCHS [LR]

LR defaults to 1e-3 (Adam's usual rate); benchmarks/run.py passes each family's best of
1e-4, 1e-3 and 1e-2 (its NAIVE_LR). Prints `RESULT {json}`: the losses before and after,
each epoch's seconds and loss, whether it reached TARGET.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from families import FAMILIES  # noqa: E402

from tests.forward_zoo import FORWARD_BY_NAME  # noqa: E402  (the model code the user has)

# The trunk stays in eval mode while the head trains: in train mode its dropout feeds the
# head noisy features, and the loss on the model's real (eval) features rose instead
# (token family, own-outputs data, 2,000 sequences: 1.0e-4 -> 6.2e-4 in ten epochs).
LR, BATCH = 1e-3, 32


def main(
    family_name: str, weights: str, data: str, out: str, target: str, cap: str, lr: str = ""
) -> None:
    family = FAMILIES[family_name]
    model = FORWARD_BY_NAME[family.case].build()
    model.load_state_dict(torch.load(weights, weights_only=True))
    dataset = torch.load(data, weights_only=True)
    src, tgt, y = dataset["src"], dataset["tgt"], dataset["y"]
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(family.head + "."))
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=float(lr or LR)
    )

    model.eval()  # the frozen trunk as it runs at inference: no dropout

    def full_loss() -> float:
        with torch.no_grad():
            return F.mse_loss(model(src, tgt), y).item()

    before = after = full_loss()
    dim, size = family.batch_dim, y.shape[family.batch_dim]
    order_gen = torch.Generator().manual_seed(0)
    epoch_seconds: list[float] = []
    losses: list[float] = []
    reached = False
    for _ in range(int(cap)):
        started = time.perf_counter()
        order = torch.randperm(size, generator=order_gen)
        for start in range(0, size, BATCH):
            idx = order[start : start + BATCH]
            pick = [x.index_select(dim, idx) for x in (src, tgt, y)]
            loss = F.mse_loss(model(pick[0], pick[1]), pick[2])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        after = full_loss()
        losses.append(after)
        epoch_seconds.append(time.perf_counter() - started)
        if after <= float(target):
            reached = True
            break
    torch.jit.script(model).save(out)
    reloaded = torch.jit.load(out)
    two_src, two_tgt = (x.narrow(dim, 0, 2) for x in (src, tgt))
    with torch.no_grad():
        assert torch.allclose(reloaded(two_src, two_tgt), model(two_src, two_tgt), atol=1e-5)
    result = {
        "before": before,
        "after": after,
        "epoch_seconds": epoch_seconds,
        "losses": losses,
        "reached": reached,
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:8])
