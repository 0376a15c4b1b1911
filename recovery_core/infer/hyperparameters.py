"""Collect the hyperparameters: determined ones from shapes, free ones with candidates.

Determined values come from the outermost composite that fixes them (an
nn.Transformer's d_model, not again from each of its layers). When two modules fix
the same name to different values, the later one is named `<path>.<name>`.
Free values are global and listed only when some module (or the wiring) uses them;
each is declared once, with its candidates and default, by the family that owns it or
next to the wirings (`Setting`; docs/spec-conventions.md lists them). What a module's
shapes fix is its layer type's `determines`. A value in the checkpoint's own
`hyper_parameters` wins over a default.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from recovery_core.infer.compose import join
from recovery_core.infer.detection import fmt
from recovery_core.infer.families.conv import (
    GROUPS,
    LEGACY_NAMES,
    SETTING_DEFAULTS,
    groups_name,
    padding_candidates,
    split_setting,
)
from recovery_core.infer.family import Setting
from recovery_core.infer.registry import COMPOSITES, CONTAINERS, FAMILIES, layer_type
from recovery_core.infer.unknown import POOLS, UNKNOWN_CHOICES, name_hint
from recovery_core.infer.wiring import FORWARD_SETTINGS, POS_DIM
from recovery_core.model.spec import (
    SOURCE_DEFAULT,
    SOURCE_METADATA,
    SOURCE_SHAPE,
    WIRING,
    Hyperparameter,
    ModuleSpec,
    Wiring,
)

NOT_DETERMINED = "not determined by the weights"


def _declared() -> dict[str, Setting]:
    """Every hidden value by name: the families' (infer/families/) and the forward's."""
    found: dict[str, Setting] = {}
    for setting in (*(s for f in FAMILIES for s in f.settings), *FORWARD_SETTINGS):
        if setting.name in found:
            raise ValueError(f"the hidden value {setting.name!r} is declared twice")
        found[setting.name] = setting
    return found


SETTINGS: dict[str, Setting] = _declared()
# Views for the readers: model-wide name -> (candidates, default), where fixed (the rest
# are worked out from the model), and -> the checkpoint metadata entries that carry it.
FREE_TABLE: dict[str, tuple[tuple[Any, ...], Any]] = {
    s.name: (s.candidates, s.default)
    for s in SETTINGS.values()
    if s.candidates is not None and not s.per_layer
}
METADATA_NAMES: dict[str, tuple[str, ...]] = {
    s.name: s.metadata_names for s in SETTINGS.values() if s.metadata_names
}


def setting(name: str) -> Setting | None:
    """The declaration of a hidden value, a convolution's own ("blocks.0.stride") by its
    last part; None for names no family declares (an Unknown module's path)."""
    declared = SETTINGS.get(name)
    if declared is None and "." in name:
        declared = SETTINGS.get(name.rpartition(".")[2])
        return declared if declared is not None and declared.per_layer else None
    return declared


def setting_label(name: str) -> str:
    """The hidden value `name` for people, in a few words ("Stride of blocks.0" for a
    convolution's own); "" when no family declares it."""
    declared = setting(name)
    if declared is None:
        return ""
    if declared.per_layer and "." in name:
        path = name.rpartition(".")[0]
        return f"{declared.label} of {'layer ' if path.isdigit() else ''}{path}"
    return declared.label


def setting_meaning(name: str) -> str:
    """What the hidden value `name` changes, in a sentence a person who does not program
    can follow; "" when no family declares it."""
    declared = setting(name)
    return declared.meaning if declared is not None else ""


@dataclass
class Determined:
    shapes: Mapping[str, tuple[int, ...]]
    found: dict[str, Hyperparameter] = field(default_factory=dict)

    def add(self, name: str, value: Any, path: str, key: str, evidence: str | None = None) -> None:
        shape = self.shapes.get(key)
        hp = Hyperparameter(
            name=name,
            value=value,
            source=SOURCE_SHAPE,
            evidence=evidence or f"{key} is {'unknown' if shape is None else fmt(shape)}",
            key=key,
            shape=shape,
        )
        existing = self.found.get(name)
        if existing is None:
            self.found[name] = hp
        elif existing.value != value:
            self.found[join(path, name)] = replace(hp, name=join(path, name))


@dataclass
class _ModuleFixes:
    """One module's view of `Determined` (the `Fixes` its layer type writes to)."""

    found: Determined
    path: str
    roles: Mapping[str, str]

    @property
    def shapes(self) -> Mapping[str, tuple[int, ...]]:
        return self.found.shapes

    def key(self, relative: str) -> str:
        return join(self.path, relative)

    def add(self, name: str, value: Any, relative_key: str, evidence: str | None = None) -> None:
        self.found.add(name, value, self.path, self.key(relative_key), evidence)


def determined_hyperparameters(
    root: ModuleSpec, wiring: Wiring | None, shapes: Mapping[str, tuple[int, ...]]
) -> list[Hyperparameter]:
    found = Determined(shapes)
    roles = wiring.roles if wiring is not None else {}

    def visit(module: ModuleSpec) -> None:
        kind = layer_type(module.type)
        if kind is not None and kind.determines is not None:
            kind.determines(_ModuleFixes(found, module.path, roles), module.args)
        if module.type not in COMPOSITES:  # a composite's parts repeat what it already said
            for child in module.children:
                visit(child)

    visit(root)
    return list(found.found.values())


# ------------------------------------------------------------------- free values


def _divisors(n: int) -> tuple[int, ...]:
    return tuple(d for d in range(1, n + 1) if n % d == 0)


def _common_divisors(widths: list[int]) -> tuple[int, ...]:
    return tuple(d for d in _divisors(min(widths)) if all(w % d == 0 for w in widths))


def _largest_up_to(candidates: tuple[int, ...], preferred: int) -> int:
    return preferred if preferred in candidates else max(c for c in candidates if c <= preferred)


def _nhead(root: ModuleSpec) -> tuple[tuple[int, ...], int, str]:
    widths = sorted(
        {m.args.get("embed_dim") or m.args["d_model"] for m in root.walk() if "nhead" in m.hidden}
    )
    candidates = _common_divisors(widths)
    default = _largest_up_to(candidates, 8)
    return (
        candidates,
        default,
        f"nhead must divide {' and '.join(map(str, widths))}; {default} is the usual choice",
    )


def _num_groups(root: ModuleSpec) -> tuple[tuple[int, ...], int, str]:
    widths = sorted({m.args["num_channels"] for m in root.walk() if m.type == "GroupNorm"})
    candidates = _common_divisors(widths)
    default = _largest_up_to(candidates, 32)
    return candidates, default, f"num_groups must divide {' and '.join(map(str, widths))} channels"


def _owns(module: ModuleSpec, name: str) -> bool:
    split = split_setting(name)
    return name == groups_name(module.path) or (split is not None and split[0] == module.path)


def _convs_by_hidden_name(root: ModuleSpec) -> dict[str, ModuleSpec]:
    """Each convolution by the per-layer names it hides ("blocks.0.groups",
    "blocks.0.stride"): made once per tree, not walked once per name (thousands of them)."""
    return {
        hidden: m
        for m in root.walk()
        if m.type.startswith("Conv")
        for hidden in m.hidden
        if _owns(m, hidden)
    }


def _conv_setting(name: str, convs: Mapping[str, ModuleSpec]) -> FreeValue | None:
    """One convolution's stride, padding, dilation or output padding (infer/families/conv.py):
    none of them shows in the weights; the data's shapes settle most (stack_shapes.py)."""
    split = split_setting(name)
    owner = convs.get(name) if split is not None else None
    if split is None or owner is None:
        return None
    return conv_setting_value(owner, split[1])


def conv_setting_value(owner: ModuleSpec, setting: str) -> FreeValue:
    """Candidates, default and why for one setting ("stride", ...) of the convolution `owner`."""
    kernel = tuple(owner.args["kernel_size"])
    if setting == "padding":
        pads = ", ".join(str(k // 2) for k in kernel)
        return FreeValue(
            padding_candidates(kernel),
            SETTING_DEFAULTS[setting],
            f"'same' pads dilation × ({pads}) on each side, 'valid' none; 'same' is usual",
        )
    reasons = {
        "stride": "1 is usual; the data's shapes tell where a layer halves the size",
        "dilation": "1 is usual; 2 spreads the kernel over twice the span",
        "output_padding": "0 is usual; 1 adds a row to a strided transposed output",
    }
    declared = SETTINGS[setting]
    assert declared.candidates is not None  # stride, dilation, output_padding: fixed lists
    return FreeValue(declared.candidates, declared.default, reasons[setting])


def module_free_value(name: str, module: ModuleSpec) -> FreeValue:
    """Candidates and default of a value one module hides, read from that module alone
    (a type chosen by hand, infer/retype.py): the rules the whole tree's values follow."""
    split = split_setting(name)
    if split is not None and module.type.startswith("Conv"):
        return conv_setting_value(module, split[1])
    if name == "num_groups":
        return FreeValue(*_num_groups(module))
    candidates, default = FREE_TABLE[name]
    return FreeValue(candidates, default, "the usual default")


def _conv_groups(name: str, convs: Mapping[str, ModuleSpec]) -> FreeValue | None:
    """A convolution's groups the shapes leave open (infer/families/conv.py): any divisor of
    out_channels keeps every shape, with in_channels = groups × the stored input width."""
    if name != GROUPS and not name.endswith(f".{GROUPS}"):
        return None
    owner = convs.get(name)
    if owner is None:
        return None
    default = owner.args[GROUPS]
    return FreeValue(
        _divisors(owner.args["out_channels"]),
        default,
        f"groups must divide out_channels={owner.args['out_channels']}; "
        + ("depthwise is usual" if default > 1 else "an ordinary convolution is usual"),
    )


def _batch_first(root: ModuleSpec) -> tuple[tuple[bool, ...], bool, str]:
    for m in root.walk():
        shape = m.args.get("shape") if m.type == "PositionalEncoding" else None
        if shape is not None and len(shape) == 3 and shape[0] == 1:
            return (False, True), True, f"{m.path}.{m.args['buffer']} is {fmt(shape)}: batch first"
        if shape is not None and len(shape) == 3 and shape[1] == 1:
            return (
                (False, True),
                False,
                f"{m.path}.{m.args['buffer']} is {fmt(shape)}: sequence first",
            )
    return (False, True), False, "PyTorch's default"


def free_names(root: ModuleSpec, wirings: tuple[Wiring, ...] | list[Wiring]) -> list[str]:
    """Hidden names some module or some proposed forward reads; "wiring" first when the
    weights fit more than one forward."""
    names: list[str] = [WIRING] if len(wirings) > 1 else []
    hidden = [h for module in root.walk() for h in module.hidden]
    hidden += [h for wiring in wirings for h in wiring.hidden]
    hidden += [h for wiring in wirings for _, read in wiring.retyped for h in read.hidden]
    seen = set(names)  # a set: a tree can hide thousands of names (one per Unknown module)
    for name in hidden:
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _stack_leaves(root: ModuleSpec) -> list[ModuleSpec]:
    """The modules a stack calls, in definition order (containers opened)."""
    return [m for m in root.walk() if m.type not in CONTAINERS]


def _slot_choices(root: ModuleSpec, path: str, leaves: list[ModuleSpec]) -> tuple[str, ...]:
    """Pooling a parameter-less slot may also do: when the nearest earlier layer is a
    convolution (or a norm of one), Max/AvgPool of its dimensionality; and when a Linear
    follows, the adaptive average pool to the size that Linear implies (its in_features
    over the channels), e.g. AdaptiveAvgPool2d(1) before a global-average-pool head."""
    index = next((i for i, m in enumerate(leaves) if m.path == path), None)
    if index is None:
        return ()
    earlier = [m for m in leaves[:index] if m.type != "Unknown"]
    later = [m for m in leaves[index + 1 :] if m.type != "Unknown"]
    if not earlier:
        return ()
    previous = earlier[-1]
    kind = previous.type
    if not kind.startswith(("Conv", "ConvTranspose", "BatchNorm", "InstanceNorm")):
        return ()
    dims = int(kind[-2]) if kind[-2].isdigit() else 0
    if dims not in POOLS or kind.startswith("BatchNorm1d"):
        return ()
    choices: tuple[str, ...] = POOLS[dims]
    channels = previous.args.get("out_channels") or previous.args.get("num_features")
    following = later[0] if later else None
    if following is not None and following.type == "Linear" and channels:
        per_channel, rest = divmod(following.args["in_features"], channels)
        side = round(per_channel ** (1 / dims)) if per_channel > 0 and not rest else 0
        if side and side**dims == per_channel:
            pool = f"AdaptiveAvgPool{dims}d({side})"
            choices += (pool, f"{pool}+Flatten")  # torchvision flattens in its forward
    return choices


def _unknown_guesses(root: ModuleSpec) -> dict[str, tuple[str, str]]:
    """path -> (guessed module name, why), from the name or the neighbours."""
    guesses: dict[str, tuple[str, str]] = {}
    for container in root.walk():
        children = list(container.children)
        for index, child in enumerate(children):
            if child.type != "Unknown":
                continue
            hint = name_hint(child.name)
            if hint is not None:
                guesses[child.path] = (hint, f"its name '{child.name}'")
                continue
            before = [c for c in children[:index] if c.type != "Unknown"]
            after = [c for c in children[index + 1 :] if c.type != "Unknown"]
            previous = before[-1] if before else None
            following = after[0] if after else None
            run_start = index
            while run_start > 0 and children[run_start - 1].type == "Unknown":
                run_start -= 1
            last_in_run = index + 1 == len(children) or children[index + 1].type != "Unknown"
            feature_map = previous is not None and previous.type.startswith(
                ("Conv", "ConvTranspose", "BatchNorm2d", "BatchNorm3d", "GroupNorm")
            )
            where = (f"after {previous.path} ({previous.type})" if previous else "at the start") + (
                f", before {following.path} ({following.type})" if following else ""
            )
            if feature_map and following is not None and following.type == "Linear" and last_in_run:
                guesses[child.path] = (
                    "Flatten",
                    f"its place {where}: a feature map meets a Linear",
                )
            elif index == run_start:
                guesses[child.path] = ("ReLU", f"its place {where}: the usual activation")
            else:
                guesses[child.path] = (
                    "Dropout",
                    f"its place {where}, after another parameter-less module",
                )
    return guesses


def _flat_metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level entries, then those one level down (e.g. Lightning's nested hparams)."""
    flat: dict[str, Any] = {}
    for value in values.values():
        if isinstance(value, Mapping):
            for inner, inner_value in value.items():
                flat.setdefault(str(inner), inner_value)
    for key, value in values.items():
        if not isinstance(value, Mapping):
            flat[str(key)] = value
    return flat


def _valid_metadata(name: str, value: Any, candidates: tuple[Any, ...]) -> Any | None:
    """The value in our terms, or None when it cannot be used."""
    declared = SETTINGS.get(name)
    reads = declared.reads if declared is not None else "choice"
    if reads == "fraction":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1
        return float(value) if ok else None
    if reads == "word" and isinstance(value, str):
        value = value.lower()  # "ReLU" and "relu" mean the same here
    if all(isinstance(c, bool) for c in candidates):
        return value if isinstance(value, bool) else None
    if isinstance(value, bool):
        return None  # True == 1 would otherwise pass as nhead=1
    return value if value in candidates else None


@dataclass(frozen=True)
class FreeValue:
    candidates: tuple[Any, ...]
    default: Any
    reason: str


def _pos_dim(root: ModuleSpec, wiring: Wiring | None) -> tuple[tuple[int, ...], int, str]:
    """Which dimension of the tensor as given the positions run along: a [1, L, d] table
    reads as dimension 1, [L, 1, d] as 0; else it follows the batch_first guess."""
    batch_first = _batch_first(root)[1]
    default = 1 if batch_first else 0
    why = "it follows the batch_first guess"
    roles = wiring.roles if wiring is not None else {}
    for role in ("pos_encoding", "src_pos_encoding", "pos_table"):
        path = roles.get(role)
        if path is None:
            continue
        shape = None
        for m in root.walk():
            if m.path == path and m.type == "PositionalEncoding":
                shape = tuple(m.args["shape"])
            for kept in getattr(m, "kept", ()):
                if (f"{m.path}.{kept.name}" if m.path else kept.name) == path:
                    shape = tuple(kept.shape)
        if shape is not None and len(shape) == 3 and shape[0] == 1:
            default, why = 1, f"{path} is {fmt(shape)}: positions along dimension 1"
        elif shape is not None and len(shape) == 3 and shape[1] == 1:
            default, why = 0, f"{path} is {fmt(shape)}: positions along dimension 0"
        break
    return (0, 1), default, why


def _free_value(
    name: str,
    root: ModuleSpec,
    wiring: Wiring | None,
    guesses: dict[str, tuple[str, str]],
    wirings: tuple[Wiring, ...] | list[Wiring],
    convs: Mapping[str, ModuleSpec],
) -> FreeValue:
    if name == "nhead":
        return FreeValue(*_nhead(root))
    if name == "num_groups":
        return FreeValue(*_num_groups(root))
    conv_groups = _conv_groups(name, convs)
    if conv_groups is not None:
        return conv_groups
    conv_setting = _conv_setting(name, convs)
    if conv_setting is not None:
        return conv_setting
    if name == "batch_first":
        return FreeValue(*_batch_first(root))
    if name in guesses:
        choice, why = guesses[name]
        choices = UNKNOWN_CHOICES + _slot_choices(root, name, _stack_leaves(root))
        return FreeValue(choices, choice, f"a parameter-less module; guessed {choice} from {why}")
    if name == WIRING:
        assert wiring is not None  # listed only when there are forwards to choose from
        return FreeValue(
            tuple(w.name for w in wirings),
            wiring.name,
            f"{len(wirings)} forwards fit the weights; ranked first by {wiring.reason}",
        )
    if name == POS_DIM:
        return FreeValue(*_pos_dim(root, wiring))
    if name == "causal_mask":
        seq2seq = wiring is not None and wiring.kind == "seq2seq"
        return FreeValue(
            (False, True),
            seq2seq,
            "the usual choice for " + ("a seq2seq decoder" if seq2seq else "an encoder"),
        )
    candidates, default = FREE_TABLE[name]
    return FreeValue(candidates, default, "the usual default")


def free_hyperparameters(
    root: ModuleSpec,
    wiring: Wiring | None,
    metadata: Mapping[str, Any],
    wirings: tuple[Wiring, ...] | list[Wiring] | None = None,
) -> tuple[list[Hyperparameter], list[str]]:
    if wirings is None:
        wirings = (wiring,) if wiring is not None else ()
    guesses = _unknown_guesses(root)
    convs = _convs_by_hidden_name(root)
    entries = _flat_metadata(metadata)
    hyperparameters, notes = [], []
    for name in free_names(root, wirings):
        free = _free_value(name, root, wiring, guesses, wirings, convs)
        hp = Hyperparameter(
            name=name,
            value=free.default,
            source=SOURCE_DEFAULT,
            evidence=f"{NOT_DETERMINED}; {free.reason}",
            candidates=free.candidates,
        )
        split = split_setting(name) if name in convs else None
        setting = split[1] if split is not None else None
        for entry in _metadata_entries(name, entries, setting):
            value = _valid_metadata(name, entries[entry], free.candidates)
            if value is None:
                what = name if setting is None else f"convolution {setting}"
                note = (
                    f"The checkpoint's hyper_parameters say {entry}={entries[entry]!r}, which is "
                    f"not a valid {what} here (choose from {list(free.candidates)}); it was ignored."
                )
                if note not in notes:  # one sentence, not one per convolution
                    notes.append(note)
                continue
            hp = replace(
                hp,
                value=value,
                source=SOURCE_METADATA,
                evidence=f"the checkpoint's hyper_parameters entry '{entry}' is {entries[entry]!r}",
            )
            break
        hyperparameters.append(hp)
    return hyperparameters, notes


def _metadata_entries(
    name: str, entries: Mapping[str, Any], conv_setting: str | None = None
) -> Iterator[str]:
    """Entries that carry `name`; a convolution's own stride or padding (`conv_setting`)
    follows the global entry (conv_stride, conv_padding), which applies to every layer."""
    legacy = LEGACY_NAMES.get(conv_setting) if conv_setting is not None else None
    for entry in METADATA_NAMES.get(legacy or name, ()):
        if entry in entries:
            yield entry


def metadata_conflicts(determined: list[Hyperparameter], metadata: Mapping[str, Any]) -> list[str]:
    """Sentences for metadata entries that contradict a value fixed by the shapes."""
    entries = _flat_metadata(metadata)
    return [
        f"The checkpoint's hyper_parameters say {hp.name}={entries[hp.name]!r}, but {hp.evidence} "
        f"fixes it at {hp.value!r}; the weights win."
        for hp in determined
        if hp.name in entries and entries[hp.name] != hp.value
    ]
