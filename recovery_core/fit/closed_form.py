"""Closed-form training: a final Linear layer under MSE is a least-squares problem.

When everything that trains is the Linear layer producing the model's output and the
loss is MSE, the optimum is `lstsq([features, 1], target)`: one exact solve in float64
instead of many gradient steps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from recovery_core.errors import TrainingError
from recovery_core.fit.freeze import FreezePlan
from recovery_core.fit.prefix_cache import CachedFeatures, Suffix


def closed_form_blocker(
    model: nn.Module, plan: FreezePlan, suffix: Suffix | None, loss_name: str | None
) -> str:
    """Why the closed form does not apply ("" when it does)."""
    if loss_name != "mse":
        return "the loss is not MSE"
    if suffix is None:
        return "the trainable modules are not a final layer whose input can be captured"
    linear = dict(model.named_modules())[suffix.entry]
    runs_only_linear = suffix.runner is linear or _is_only(suffix.runner, linear)
    if not isinstance(linear, nn.Linear) or not runs_only_linear:
        return "what trains is not a single final nn.Linear"
    own = {f"{suffix.entry}.{n}" for n, _ in linear.named_parameters()}
    if set(plan.trainable_param_names) != own:
        return "other parameters train besides the final nn.Linear"
    return ""


def _is_only(runner: nn.Module, linear: nn.Linear) -> bool:
    children = list(runner.children())
    return isinstance(runner, nn.Sequential) and len(children) == 1 and children[0] is linear


@torch.no_grad()
def solve_linear(linear: nn.Linear, features: CachedFeatures, target: Tensor) -> None:
    """Set `linear`'s weight and bias to the least-squares optimum, in place."""
    if len(features.batched) != 1 or 0 not in features.batched:
        raise TrainingError("The final layer's input could not be captured as one tensor.")
    x = features.batched[0]
    rows = x.numel() // linear.in_features
    if target.numel() != rows * linear.out_features:
        raise TrainingError(
            f"The target has shape {tuple(target.shape)} but the output layer produces "
            f"{linear.out_features} values for each of {rows} rows; choose a matching target."
        )
    a = x.reshape(rows, linear.in_features).to("cpu", torch.float64)
    if linear.bias is not None:
        a = torch.cat([a, torch.ones(rows, 1, dtype=torch.float64)], dim=1)
    y = target.reshape(rows, linear.out_features).to("cpu", torch.float64)
    solution = least_squares(a, y)
    if not bool(torch.isfinite(solution).all()):
        raise TrainingError("The least-squares solve produced NaN or Inf; check the data.")
    linear.weight.copy_(solution[: linear.in_features].T.to(linear.weight))
    if linear.bias is not None:
        linear.bias.copy_(solution[linear.in_features].to(linear.bias))


def least_squares(a: Tensor, y: Tensor) -> Tensor:
    """argmin ||a @ w - y|| in float64.

    The normal equations with a Cholesky factor cost one pass over the rows plus a tiny
    solve (several times faster than an SVD); when the features are rank-deficient or too
    ill-conditioned for them, the SVD-based gelsd driver gives the minimum-norm solution.
    """
    gram = a.T @ a
    factor, info = torch.linalg.cholesky_ex(gram)
    if int(info) == 0:
        diagonal = factor.diagonal()
        # cond(gram) = cond(factor)^2; past ~1e12 the normal equations lose too many digits.
        if float(diagonal.min()) > 0 and float(diagonal.max() / diagonal.min()) < 1e6:
            return torch.cholesky_solve(a.T @ y, factor)
    return torch.linalg.lstsq(a, y, driver="gelsd").solution


__all__ = ["closed_form_blocker", "least_squares", "solve_linear"]
