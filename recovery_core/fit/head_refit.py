"""A model's output with its final Linear layer refitted to the data: by least squares
for a target of values (MSE), by logistic regression for class labels (cross-entropy).

The search ranks hidden values by how well a model fits the data. With the checkpoint's
own output layer that says little about the rest when the data is a task the model was
not trained for: the original head fits none of the combinations, and the one it fits
least badly need not be the true one. Refitting that layer in closed form (the optimum
any training of it would reach, under MSE) scores what the hidden values change: the
features the layer reads. Class labels for a new task (other classes, or the same
classes drawn differently) are the same case: the original head's cross-entropy judges
nothing, a multinomial logistic regression on the features the layer reads does.

The output layer is found by what ran, not by its name: the nn.Linear whose output the
model returned (itself, or a view of it such as a transpose). A model whose output is
computed after its last Linear (a softmax, a sum of two heads) has none.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from recovery_core.fit.closed_form import least_squares, logistic_regression

# A head is refitted only on at least this many rows per coefficient it solves for: on
# fewer, least squares fits noise and every combination looks good. A class label is one
# row that every class's weights share: a logistic refit solves for (classes - 1) times
# the layer's inputs and bias on each (the softmax is unchanged by adding one to all).
ROWS_PER_COEFFICIENT = 4
# A refit solves on at most this many float64 values (rows of the layer's inputs and
# targets, 128 MiB): a large vocabulary on long sequences must not double the memory
# the forward took. Beyond, it solves on evenly spaced rows and predicts every row.
REFIT_VALUES = 1 << 24
# A retrained output layer that fits the data this many times better than the original
# one means the data is a task the original model was not trained for.
NEW_TASK_FACTOR = 10.0
# The search ranks again with the output layer refitted when a finalist's refitted loss is
# this many times below the best's with the original weights. Fitting noise alone lowers
# a loss by about 1 / (1 - 1 / ROWS_PER_COEFFICIENT) = 1.33x, so data the original
# weights explain stays below it; on new data a wrong trunk's refit can already be far
# below the original head (3.4x for a first-token classifier whose truth was not yet a
# finalist), and the refitted ranking then finds the truth.
REFIT_GAIN = 2.0
# A loss below this share of the target's mean square is a fit to rounding: nothing is
# left for a refit or a retrained layer to show.
EXACT_FIT = 1e-6
# The screening refit of class labels scales its least-squares scores by at most this
# (separable labels would take it to infinity; by then the cross-entropy is ~0 anyway).
SCALE_AT_MOST = 1e4

# The output layer found for each model (None: its output is not a Linear's), so that
# later forwards hook one module instead of every Linear.
_heads: weakref.WeakKeyDictionary[nn.Module, tuple[str, nn.Linear] | None] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True)
class Refitted:
    output: Tensor  # the model's own output
    refitted: Tensor | None  # the same with the head refitted (None: it could not be)
    head: str | None  # the head's module name ("" the model itself; None: no head found)
    coefficients: int = 0  # weights solved for per row of the target (`coefficients`)


def forward_refitted(
    model: nn.Module, inputs: tuple[Tensor, ...], target: Tensor, screening: bool = False
) -> Refitted:
    """The model's output on `inputs`, and the output its final Linear would give after a
    least-squares fit to `target` (same shape as the output, floating point), or a
    logistic regression on class labels (`target` an index per row of the output, whose
    last dimension holds the classes, as `LossFunction` reads them). With `screening`,
    class labels get the cheaper fit that needs a class's share of the rows
    (`_screen_classes`)."""
    known = model in _heads
    head = _heads.get(model)
    layers = [head] if head is not None else [] if known else _linears(model)
    calls: dict[nn.Module, tuple[Tensor, Tensor]] = {}
    hooks = [layer.register_forward_hook(_recorder(calls)) for _, layer in layers]
    try:
        output = model(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    found = next(
        ((name, layer) for name, layer in layers if _returned(calls.get(layer), output)), None
    )
    if not known:
        _heads[model] = found
    if found is None:
        return Refitted(output, None, None)
    name, layer = found
    features, produced = calls[layer]
    if target.is_floating_point():
        if target.shape != output.shape:
            return Refitted(output, None, name)
        refitted = _refit(layer, features, produced, output, target)
    else:
        fit = _screen_classes if screening else _refit_classes
        refitted = fit(layer, features, produced, output, target)
    return Refitted(output, refitted, name, coefficients(layer, target, screening))


def _linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def _recorder(calls: dict[nn.Module, tuple[Tensor, Tensor]]):  # noqa: ANN202 - a hook
    def record(module: nn.Module, args: tuple[Tensor, ...], result: Tensor) -> None:
        if args and isinstance(args[0], Tensor) and isinstance(result, Tensor):
            calls[module] = (args[0], result)  # the last call: a head runs last

    return record


def _returned(call: tuple[Tensor, Tensor] | None, output: object) -> bool:
    """Is `output` the layer's result, or a view of all of it (a transpose, a reshape)?"""
    if call is None or not isinstance(output, Tensor):
        return False
    produced = call[1]
    return (
        produced.is_contiguous()
        and output.numel() == produced.numel()
        and output.untyped_storage().data_ptr() == produced.untyped_storage().data_ptr()
    )


def _refit(
    layer: nn.Linear, features: Tensor, produced: Tensor, output: Tensor, target: Tensor
) -> Tensor | None:
    """The model's output with `layer` refitted to `target` (None: too few rows). Solved
    on at most REFIT_VALUES float64 values: beyond, on evenly spaced rows (across the
    samples and their steps), and every row predicted from that solution."""
    rows = features.numel() // layer.in_features
    solved = min(rows, REFIT_VALUES // (_inputs(layer) + layer.out_features))
    if solved < ROWS_PER_COEFFICIENT * _inputs(layer):
        return None
    x = features.reshape(rows, layer.in_features)
    # The target laid out as the layer produced it: the output is a view of that.
    aligned = torch.empty(produced.shape, dtype=target.dtype)
    _view_like(aligned, output, produced).copy_(target)
    y = aligned.reshape(rows, layer.out_features)
    solved_for = _solve(layer, *_evenly(solved, x, y))
    if solved_for is None:
        return None
    fitted = _predict(layer, x, solved_for[1])
    return _view_like(fitted.reshape(produced.shape).to(output.dtype), output, produced)


def _solve(layer: nn.Linear, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor] | None:
    """Least squares of `y` on `x` (float64), with the layer's bias as a column of ones:
    that design matrix and the solution, its rows the inputs then the bias (None: the
    solution is not finite)."""
    a = x.double()
    if _has_bias(layer):
        a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], dim=1)
    solution = least_squares(a, y.double())
    return (a, solution) if bool(torch.isfinite(solution).all()) else None


def _predict(layer: nn.Linear, x: Tensor, solution: Tensor) -> Tensor:
    """The layer's output on `x` with `_solve`'s weights and bias."""
    fitted = x @ solution[: layer.in_features].to(x.dtype)
    if _has_bias(layer):
        fitted += solution[layer.in_features].to(x.dtype)
    return fitted


def _evenly(count: int, *tensors: Tensor) -> tuple[Tensor, ...]:
    """`count` evenly spaced rows of each tensor (all of them when it has no more)."""
    rows = len(tensors[0])
    if count >= rows:
        return tensors
    chosen = torch.linspace(0, rows - 1, count).round().long()
    return tuple(t[chosen] for t in tensors)


def _refit_classes(
    layer: nn.Linear, features: Tensor, produced: Tensor, output: Tensor, target: Tensor
) -> Tensor | None:
    """The model's output with `layer` refitted to class labels by a multinomial logistic
    regression (None: too few labels, or an output whose last dimension is not the
    layer's outputs in order). Rows labelled outside the classes (cross-entropy's ignored
    -100) are left out of the fit and predicted like the others."""
    rows = _labelled(layer, features, produced, output, target, screening=False)
    if rows is None:
        return None
    x, x_fit, y_fit = rows
    solution = logistic_regression(x_fit.double(), y_fit, layer.out_features, _has_bias(layer))
    if solution is None:
        return None
    weight, bias = solution
    fitted = x @ weight.T.to(x.dtype)
    if bias is not None:
        fitted += bias.to(x.dtype)
    return _view_like(fitted.reshape(produced.shape).to(output.dtype), output, produced)


def _screen_classes(
    layer: nn.Linear, features: Tensor, produced: Tensor, output: Tensor, target: Tensor
) -> Tensor | None:
    """The model's output with `layer` refitted to class labels cheaply, for screening:
    least squares of each class's indicator on the layer's inputs (each class fitted
    apart: far fewer labels than a logistic regression needs, `coefficients`), its
    outputs then scaled by the one factor that minimises the cross-entropy. A classifier
    fitted to the samples, as the logistic regression is, on a fraction of the samples,
    so of the forwards: the finalists get the logistic one (`_refit_classes`)."""
    rows = _labelled(layer, features, produced, output, target, screening=True)
    if rows is None:
        return None
    x, x_fit, y_fit = rows
    solved_for = _solve(layer, x_fit, torch.nn.functional.one_hot(y_fit, layer.out_features))
    if solved_for is None:
        return None
    a, solution = solved_for
    fitted = _predict(layer, x, _softmax_scale(a @ solution, y_fit) * solution)
    return _view_like(fitted.reshape(produced.shape).to(output.dtype), output, produced)


def _labelled(
    layer: nn.Linear,
    features: Tensor,
    produced: Tensor,
    output: Tensor,
    target: Tensor,
    screening: bool,
) -> tuple[Tensor, Tensor, Tensor] | None:
    """The layer's inputs per row, and the rows to fit on with their labels (evenly
    spaced up to REFIT_VALUES); None when the output's classes are not the layer's
    outputs in order, or the labels are too few for the fit."""
    classes = layer.out_features
    order = _class_rows(output, produced, classes)
    if order is None or classes < 2 or target.numel() != len(order):
        return None
    rows = len(order)
    labels = torch.empty(rows, dtype=torch.long)
    labels[order] = target.reshape(-1).long()
    kept = (labels >= 0) & (labels < classes)
    x = features.reshape(rows, layer.in_features)
    solved = min(int(kept.sum()), REFIT_VALUES // (_inputs(layer) + classes))
    if solved < ROWS_PER_COEFFICIENT * coefficients(layer, target, screening):
        return None
    x_fit, y_fit = _evenly(solved, x[kept], labels[kept])
    return x, x_fit, y_fit


def _softmax_scale(scores: Tensor, labels: Tensor, steps: int = 30) -> float:
    """The factor t >= 0 that minimises the cross-entropy of softmax(t * scores) on
    `labels`: convex in t, so Newton's steps, halved while they do not lower it, within
    [0, SCALE_AT_MOST]."""
    chosen = scores.gather(1, labels.unsqueeze(1)).squeeze(1)

    def loss(t: float) -> float:
        return float(((t * scores).logsumexp(1) - t * chosen).mean())

    t, value = 1.0, loss(1.0)
    for _ in range(steps):
        p = (t * scores).softmax(1)
        mean = (p * scores).sum(1)
        slope = float((mean - chosen).mean())
        curvature = float(((p * scores.square()).sum(1) - mean.square()).mean())
        if curvature <= 1e-12:
            break
        step = -slope / curvature
        while True:
            moved = min(max(t + step, 0.0), SCALE_AT_MOST)
            moved_value = loss(moved)
            if moved_value <= value or abs(step) <= 1e-6 * max(1.0, t):
                break
            step /= 2
        if abs(moved - t) <= 1e-6 * max(1.0, t):
            return moved if moved_value <= value else t
        t, value = moved, moved_value
    return t


def _has_bias(layer: nn.Linear) -> bool:
    return layer.bias is not None


def _class_rows(output: Tensor, produced: Tensor, classes: int) -> Tensor | None:
    """For each row of `output` read as (rows, classes), the layer's row it is (`produced`
    is the layer's contiguous result); None when the output's last dimension is not the
    layer's outputs in their order (a transposed result puts classes elsewhere)."""
    if output.dim() == 0 or output.shape[-1] != classes:
        return None
    index = torch.arange(produced.numel()).reshape(produced.shape)
    seen = _view_like(index, output, produced).reshape(-1, classes)
    first = seen[:, :1]
    if not (
        bool((first % classes == 0).all())
        and torch.equal(seen - first, torch.arange(classes).expand_as(seen))
    ):
        return None
    return first.squeeze(1) // classes


def _view_like(tensor: Tensor, output: Tensor, produced: Tensor) -> Tensor:
    """`tensor` (laid out as `produced`) seen as `output` sees `produced`."""
    offset = output.storage_offset() - produced.storage_offset()
    return tensor.as_strided(output.shape, output.stride(), offset)


def output_layer(model: nn.Module, target: Tensor) -> tuple[str, int, int] | None:
    """The output layer found for `model` by an earlier `forward_refitted`, and how many
    weights a refit to `target` solves for per row, then a screening refit (None: none
    found, or not looked for)."""
    found = _heads.get(model)
    if found is None:
        return None
    name, layer = found
    return name, coefficients(layer, target), coefficients(layer, target, screening=True)


def coefficients(layer: nn.Linear, target: Tensor, screening: bool = False) -> int:
    """Weights a refit to `target` solves for per row: per output, the layer's inputs and
    its bias (least squares fits each output apart); for class labels, those of every
    class but one together (one label is a row of all). With `screening`, labels count
    as a class's weights times the square root of the classes but one: the screening
    refit (`_screen_classes`) fits each class apart, on a class's weights, but a class
    seen in few labels is fitted to noise (a rare class in four labels per weight has a
    handful), and screening on that few dropped true values in the forward zoo; the
    geometric mean of the two counts kept them, at a fraction of the samples."""
    if target.is_floating_point():
        return _inputs(layer)
    others = max(1, layer.out_features - 1)
    return math.ceil(_inputs(layer) * math.sqrt(others)) if screening else _inputs(layer) * others


def _inputs(layer: nn.Linear) -> int:
    return layer.in_features + (layer.bias is not None)


def refit_method(target: Tensor) -> str:
    """How a refit to `target` is solved, in words."""
    return "least squares" if target.is_floating_point() else "logistic regression"


def screening_method(target: Tensor) -> str:
    """How a screening refit to `target` is solved, in words."""
    if target.is_floating_point():
        return refit_method(target)
    return "least squares of each class, scaled into a softmax"


def mean_square(target: Tensor) -> float:
    """The target's mean square (1 for class labels): what a loss is small against."""
    return float(target.double().square().mean()) if target.is_floating_point() else 1.0


def chance_loss(target: Tensor) -> float:
    """The loss of the best constant prediction: the variance of values (MSE), the
    entropy of the classes' frequencies for labels (cross-entropy; negative labels, the
    ignored -100, left out)."""
    if target.is_floating_point():
        return float(target.double().var()) if target.numel() > 1 else 0.0
    labels = target[target >= 0]
    if labels.numel() == 0:
        return 0.0
    share = torch.bincount(labels.reshape(-1)).double() / labels.numel()
    share = share[share > 0]
    return float(-(share * share.log()).sum())


def fits_exactly(loss: float, target: Tensor) -> bool:
    """Is `loss` on `target` a fit to rounding (EXACT_FIT of its mean square)?"""
    return loss <= EXACT_FIT * mean_square(target)


__all__ = [
    "EXACT_FIT",
    "NEW_TASK_FACTOR",
    "REFIT_GAIN",
    "REFIT_VALUES",
    "ROWS_PER_COEFFICIENT",
    "Refitted",
    "chance_loss",
    "coefficients",
    "fits_exactly",
    "forward_refitted",
    "mean_square",
    "output_layer",
    "refit_method",
    "screening_method",
]
