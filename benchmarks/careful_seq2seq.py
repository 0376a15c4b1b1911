"""The careful hand-written script for the forward-recovery benchmark (section 8).

What an engineer who knows the architecture writes: the model class, the original
weights, the frozen trunk's features computed once, the output layer solved by least
squares, `torch.jit.script`, save, reload and check. Run as a whole process:

    python benchmarks/careful_seq2seq.py WEIGHTS DATA OUT.pt
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.forward_zoo import VectorSeq2Seq  # noqa: E402  (the model code the user has)


def main(weights: str, data: str, out: str) -> None:
    model = VectorSeq2Seq(batch_first=False).eval()
    model.load_state_dict(torch.load(weights, weights_only=True))
    dataset = torch.load(data, weights_only=True)
    src, tgt, y = dataset["src"], dataset["tgt"], dataset["y"]
    captured = {}
    hook = model.out.register_forward_pre_hook(lambda _m, args: captured.setdefault("x", args[0]))
    with torch.no_grad():
        before = torch.nn.functional.mse_loss(model(src, tgt), y).item()
    hook.remove()
    features = captured["x"].reshape(-1, model.out.in_features).double()
    design = torch.cat([features, torch.ones(len(features), 1, dtype=torch.float64)], 1)
    solution = torch.linalg.lstsq(design, y.reshape(-1, model.out.out_features).double()).solution
    with torch.no_grad():
        model.out.weight.copy_(solution[:-1].T.float())
        model.out.bias.copy_(solution[-1].float())
        after = torch.nn.functional.mse_loss(model(src, tgt), y).item()
    torch.jit.script(model).save(out)
    reloaded = torch.jit.load(out)
    with torch.no_grad():
        assert torch.allclose(reloaded(src[:, :2], tgt[:, :2]), model(src[:, :2], tgt[:, :2]))
    print(f"RESULT_MSE {before} {after}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
