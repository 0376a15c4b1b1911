"""Closed-form training: a final Linear layer under MSE is a least-squares problem.

When everything that trains is the Linear layer producing the model's output and the
loss is MSE, the optimum is `lstsq([features, 1], target)`: one exact solve in float64
instead of many gradient steps. Under cross-entropy on class labels the same layer is a
multinomial logistic regression on its inputs, a convex problem solved to its optimum
(`logistic_regression`: Newton or L-BFGS steps on the cached features, with the small
ridge the search's refits use, which keeps separable classes at a finite optimum).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from recovery_core.errors import TrainingError
from recovery_core.fit.freeze import FreezePlan
from recovery_core.fit.prefix_cache import CachedFeatures, Suffix


def closed_form_blocker(
    model: nn.Module, plan: FreezePlan, suffix: Suffix | None, loss_name: str | None
) -> str:
    """Why the closed form does not apply ("" when it does)."""
    if loss_name not in ("mse", "cross_entropy"):
        return "the loss is neither MSE nor cross-entropy"
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
def solve_linear(
    linear: nn.Linear, features: CachedFeatures, target: Tensor, loss_name: str = "mse"
) -> None:
    """Set `linear`'s weight and bias to the optimum of the loss, in place: least
    squares, or a logistic regression for cross-entropy."""
    if len(features.batched) != 1 or 0 not in features.batched:
        raise TrainingError("The final layer's input could not be captured as one tensor.")
    x = features.batched[0]
    rows = x.numel() // linear.in_features
    if loss_name == "cross_entropy":
        _solve_logistic(linear, x.reshape(rows, linear.in_features), target)
        return
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


# An exact solve of a logistic regression: L-BFGS's steps at most, where there are too
# many weights for Newton's (it stops earlier once the loss or the gradient settles).
LOGISTIC_SOLVE_STEPS = 500
# A logistic regression is fitted on standardised features, with a ridge penalty (per
# standardised weight) that keeps separable classes (the true trunk's features on labels
# its own head drew) at a finite optimum instead of one growing without bound. The
# search's refits take at most LOGISTIC_STEPS L-BFGS steps (within ~1 % of the optimum).
LOGISTIC_STEPS = 20
LOGISTIC_RIDGE = 1e-3
# A fit whose Hessian is cheap takes Newton steps instead: up to NEWTON_UP_TO weights
# (classes x inputs) and NEWTON_WORK rows x weights^2 (what building it costs). There,
# ~10 exact steps take 3-7 ms where L-BFGS's 20 take 6-15 ms of Python's overhead;
# beyond, the Hessian costs more than the steps save (measured: 136-300 rows of 17
# inputs for 3-5 classes against 748-2,000 rows for 2-12 classes).
NEWTON_UP_TO = 256
NEWTON_STEPS = 25
NEWTON_WORK = 1 << 21


def _solve_logistic(linear: nn.Linear, x: Tensor, target: Tensor) -> None:
    classes = linear.out_features
    if target.is_floating_point() or target.numel() != len(x):
        raise TrainingError(
            f"Cross-entropy needs one class label per row the output layer produces "
            f"({len(x)}); the target has shape {tuple(target.shape)}."
        )
    labels = target.reshape(-1).long()
    kept = labels != -100  # cross-entropy's ignored rows
    if bool(((labels[kept] < 0) | (labels[kept] >= classes)).any()):
        raise TrainingError(
            f"The labels must lie in 0..{classes - 1}, the output layer's classes; "
            "some are outside."
        )
    solution = logistic_regression(
        x[kept].to("cpu", torch.float64), labels[kept], classes, linear.bias is not None,
        LOGISTIC_SOLVE_STEPS,
    )  # fmt: skip
    if solution is None:
        raise TrainingError("The logistic regression diverged; check the data.")
    weight, bias = solution
    linear.weight.copy_(weight.to(linear.weight))
    if linear.bias is not None and bias is not None:
        linear.bias.copy_(bias.to(linear.bias))


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


def logistic_regression(
    x: Tensor, labels: Tensor, classes: int, with_bias: bool, steps: int = LOGISTIC_STEPS
) -> tuple[Tensor, Tensor | None] | None:
    """Weights (classes, inputs) and bias of the multinomial logistic regression of
    `labels` (each in 0..classes-1) on `x` (float64), fitted on standardised columns;
    `steps`: L-BFGS's at most, where the weights are too many for Newton's (None: it
    diverged)."""
    mean = x.mean(0) if with_bias else torch.zeros(x.shape[1], dtype=x.dtype)
    scale = (x - mean).square().mean(0).sqrt()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    z = (x - mean) / scale
    if with_bias:  # the bias as a column of ones, barely penalised (see `_penalty`)
        z = torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype)], 1)
    onehot = F.one_hot(labels, classes).to(x.dtype)
    penalty = _penalty(z.shape[1], with_bias, x.dtype)
    weights = classes * z.shape[1]
    if weights <= NEWTON_UP_TO and len(z) * weights * weights <= NEWTON_WORK:
        solution = _newton(z, onehot, penalty)
    else:
        solution = _lbfgs(z, onehot, penalty, steps)
    if not bool(torch.isfinite(solution).all()):
        return None
    weight = solution[:, : x.shape[1]] / scale
    return weight, (solution[:, -1] - weight @ mean) if with_bias else None


def _penalty(columns: int, with_bias: bool, dtype: torch.dtype) -> Tensor:
    """The ridge per weight: LOGISTIC_RIDGE, and a millionth of it on the bias, whose
    shift of every class at once changes no probability (without it, no unique optimum)."""
    penalty = torch.full((columns,), LOGISTIC_RIDGE, dtype=dtype)
    if with_bias:
        penalty[-1] = LOGISTIC_RIDGE * 1e-6
    return penalty


def _newton(z: Tensor, onehot: Tensor, penalty: Tensor) -> Tensor:
    """Newton's method with a backtracking line search (few weights: the Hessian is
    small, and a handful of exact steps beats many cheap ones)."""
    rows, columns = z.shape
    classes = onehot.shape[1]
    weight = torch.zeros(classes, columns, dtype=z.dtype)
    ridge = torch.diag(penalty.repeat(classes))
    value, gradient = _value_and_gradient(z, onehot, penalty, weight)
    for _ in range(NEWTON_STEPS):
        if float(gradient.abs().max()) < 1e-10:
            break
        p = (z @ weight.T).softmax(1)
        hessian = _hessian(z, p).reshape(classes * columns, classes * columns)
        step = torch.linalg.solve(hessian / rows + ridge, gradient.reshape(-1))
        direction = -step.reshape(classes, columns)
        slope = float((gradient * direction).sum())
        weight, value, gradient = _backtrack(
            z, onehot, penalty, (weight, value), direction, slope, (1.0, 1e-6)
        )
    return weight


def _hessian(z: Tensor, p: Tensor) -> Tensor:
    """The cross-entropy's summed Hessian in the weights, (classes, columns, classes,
    columns), built over chunks of rows: its intermediate holds at most 2^20 values."""
    classes, columns = p.shape[1], z.shape[1]
    hessian = torch.zeros(classes, columns, classes, columns, dtype=z.dtype)
    chunk = max(1, (1 << 20) // (classes * classes * columns))
    for start in range(0, len(z), chunk):
        pc, zc = p[start : start + chunk], z[start : start + chunk]
        spread = torch.diag_embed(pc) - pc.unsqueeze(2) * pc.unsqueeze(1)  # rows x C x C
        hessian += torch.einsum("iab,if,ig->afbg", spread, zc, zc)
    return hessian


def _lbfgs(z: Tensor, onehot: Tensor, penalty: Tensor, steps: int) -> Tensor:
    """L-BFGS steps (many weights: no Hessian) with a backtracking line search, written
    out: torch.optim's first step imports torch._dynamo (~1.4 s), and in the dashboard's
    server that starved page loads while three sessions scored."""
    weight = torch.zeros(onehot.shape[1], z.shape[1], dtype=z.dtype)
    value, gradient = _value_and_gradient(z, onehot, penalty, weight)
    moves: list[tuple[Tensor, Tensor, float]] = []  # (step, change of gradient, 1 / s.y)
    for _ in range(steps):
        if float(gradient.abs().max()) < 1e-10:
            break
        direction = -_two_loop(gradient, moves)
        slope = float((gradient * direction).sum())
        if slope >= 0:  # not a descent direction: start again from the gradient
            moves, direction, slope = [], -gradient, -float(gradient.square().sum())
        size = 1.0 if moves else min(1.0, 1.0 / float(gradient.abs().sum()))
        tried, new_value, new_gradient = _backtrack(
            z, onehot, penalty, (weight, value), direction, slope, (size, 1e-10)
        )
        change = new_gradient - gradient
        curvature = float(((tried - weight) * change).sum())
        if curvature > 1e-12:
            moves = [*moves[-9:], (tried - weight, change, 1.0 / curvature)]
        settled = float(value - new_value) <= 1e-12 * abs(float(value))
        weight, value, gradient = tried, new_value, new_gradient
        if settled:  # the loss no longer moves in its twelfth digit
            break
    return weight


def _backtrack(
    z: Tensor,
    onehot: Tensor,
    penalty: Tensor,
    start: tuple[Tensor, Tensor],
    direction: Tensor,
    slope: float,
    sizes: tuple[float, float],
) -> tuple[Tensor, Tensor, Tensor]:
    """The point along `direction` from `start` (weights, loss), its step halved from the
    first of `sizes`, where the loss falls by Armijo's share of `slope`, or the one at the
    smallest size: the point, its loss and its gradient."""
    (weight, value), (size, smallest) = start, sizes
    while True:
        tried = weight + size * direction
        new_value, new_gradient = _value_and_gradient(z, onehot, penalty, tried)
        if float(new_value) <= float(value) + 1e-4 * size * slope or size < smallest:
            return tried, new_value, new_gradient
        size /= 2


def _value_and_gradient(
    z: Tensor, onehot: Tensor, penalty: Tensor, weight: Tensor
) -> tuple[Tensor, Tensor]:
    log_p = (z @ weight.T).log_softmax(1)
    gradient = (log_p.exp() - onehot).T @ z / len(z) + penalty * weight
    return -(log_p * onehot).sum() / len(z) + 0.5 * (penalty * weight.square()).sum(), gradient


def _two_loop(gradient: Tensor, moves: list[tuple[Tensor, Tensor, float]]) -> Tensor:
    """The inverse-Hessian estimate of the last moves applied to `gradient`."""
    q, alphas = gradient.clone(), []
    for step, change, rho in reversed(moves):
        alpha = rho * float((step * q).sum())
        q -= alpha * change
        alphas.append(alpha)
    if moves:
        step, change, _ = moves[-1]
        q *= float((step * change).sum()) / float(change.square().sum())
    for (step, change, rho), alpha in zip(moves, reversed(alphas), strict=True):
        q += (alpha - rho * float((change * q).sum())) * step
    return q


__all__ = ["closed_form_blocker", "least_squares", "logistic_regression", "solve_linear"]
