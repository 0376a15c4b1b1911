"""Propose forward hypotheses from the module tree (docs/spec-conventions.md, "Wiring").

A forward is a hypothesis, like `nhead`: proposed from the weights, ranked, decided on
the data. Roles come from types and widths, never from names alone:

- the **core** is what the rest is arranged around: an nn.Transformer, an encoder stack
  and/or a decoder stack (TransformerEncoder/Decoder, or a ModuleList of their layers)
  under any names, or an RNN;
- every other top-level module must take exactly one role whose widths chain with the
  core: an **input adapter** (a Linear or an Embedding whose output is the core's width;
  shared by source and target, or one each), a **positional table** (a PositionalEncoding
  module, a learned position Embedding, or a raw [1, L, d] / [L, 1, d] / [L, d] tensor),
  a **final norm** (as wide as the core's output), a **head** (a Linear or a Sequential
  MLP reading the core's output; or none, or tied to the token embedding);
- a model whose children are called in order is a **stack** (`sequential`).

Every consistent assignment is a `Wiring`. Construction order and names rank them (a
small prior; neither decides alone); the data decides among them in the search, where
the wiring is one more hidden choice ("wiring"). When nothing fits, the reason names the
parts that were found and the sizes that do not chain.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from recovery_core.infer.family import (
    EXAMPLE_BATCH,
    EXAMPLE_SEQUENCE,
    EXAMPLE_TARGET_SEQUENCE,
    Setting,
    StackStep,
)
from recovery_core.infer.registry import COMPOSITES, CONTAINERS, layer_type, types_with_role
from recovery_core.infer.unknown import name_hint
from recovery_core.model.spec import (
    WIRING,
    ModelInput,
    ModuleSpec,
    Wiring,
    WiringKind,
    positional_length,
)

RNN_TYPES = types_with_role("rnn")
# Norms a sequence forward may end in (as wide as the core's output), by their family.
SEQUENCE_NORMS = types_with_role("final_norm")
MAX_PARTS = 10  # sequence hypotheses are enumerated over at most this many modules
MAX_RETYPED_STACKS = 8  # readings of a stack with leaves read as a runner-up type

# Weak name hints for the prior (a hint adds to a hypothesis' rank, never decides it).
HINTS = {
    "adapter": re.compile(
        r"emb|tok|proj|input|inp|in_|src|tgt|encode|lookup|vocab|word|stem", re.I
    ),
    "positional": re.compile(r"pos|pe$|^pe|position|time", re.I),
    "norm": re.compile(r"norm|ln", re.I),
    "head": re.compile(r"head|out|fc|classif|readout|generator|logit|pred|decode|final|lm", re.I),
}
SOURCE_NAME = re.compile(r"src|source|enc|input", re.IGNORECASE)
TARGET_NAME = re.compile(r"tgt|target|dec|output", re.IGNORECASE)

# Forward-only choices a sequence forward reads (see free hyperparameters).
REDUCE = "reduce"
POS_DIM = "pos_dim"
# The forward's own hidden values, declared here once (the layers' are their families').
FORWARD_SETTINGS = (
    Setting(
        WIRING,
        "Which of the ways of connecting the layers that fit the weights the model runs.",
        label="How data flows",
    ),
    Setting(
        POS_DIM,
        "Which dimension of the data the positions run along when the position table is "
        "added: the first (0) or the second (1).",
        label="Positions run along dimension",
    ),
    Setting(
        "scale_embedding",
        "Whether token vectors are multiplied by the square root of their size.",
        (False, True),
        False,
        metadata_names=("scale_embedding",),
        label="Scale token vectors",
    ),
    Setting(
        "causal_mask",
        "Whether the model may only look at earlier positions when writing output.",
        (False, True),
        False,
        metadata_names=("causal_mask", "causal", "is_causal"),
        label="Look only backwards",
    ),
    Setting(
        REDUCE,
        "How the model turns its output at every position into one answer per example: "
        "keep every position (none), or take their average, the first, the last or the "
        "largest.",
        ("none", "mean", "first", "last", "max"),
        "none",
        label="One output per example by",
    ),
)


def parts_of(root: ModuleSpec) -> list[ModuleSpec]:
    """The modules a forward calls: plain containers opened, parameter-less ones skipped."""
    found: list[ModuleSpec] = []

    def visit(module: ModuleSpec) -> None:
        if module.type == "Module":
            for child in module.children:
                visit(child)
        elif module.type != "Unknown":
            found.append(module)

    visit(root)
    return found


# ---------------------------------------------------------------- widths of the families


def layer_width(module: ModuleSpec) -> int | None:
    """d_model of a Transformer, an encoder/decoder stack or a layer list."""
    if "d_model" in module.args:
        return module.args["d_model"]
    for inner in module.walk():
        if inner.type in ("TransformerEncoderLayer", "TransformerDecoderLayer"):
            return inner.args["d_model"]
    return None


def mlp_widths(module: ModuleSpec) -> tuple[int, int] | None:
    """(in, out) of a Linear, or of a Sequential whose Linears chain; else None."""
    if module.type == "Linear":
        return module.args["in_features"], module.args["out_features"]
    if module.type != "Sequential":
        return None
    linears = [m for m in module.children if m.type == "Linear"]
    others = [m for m in module.children if m.type not in ("Linear", "Unknown")]
    if not linears or any(m.type not in SEQUENCE_NORMS for m in others):
        return None
    for a, b in itertools.pairwise(linears):
        if a.args["out_features"] != b.args["in_features"]:
            return None
    return linears[0].args["in_features"], linears[-1].args["out_features"]


def _norm_width(module: ModuleSpec) -> int | None:
    if module.type not in SEQUENCE_NORMS:
        return None
    shape = module.args.get("normalized_shape")
    return shape[-1] if shape and len(shape) == 1 else None


@dataclass(frozen=True)
class Core:
    """What a sequence forward is arranged around."""

    kind: str  # "transformer", "encoder+decoder", "encoder", "rnn"
    modules: tuple[ModuleSpec, ...]  # the transformer; or encoder, decoder; or the stack / RNN
    width_in: int
    width_out: int

    @property
    def wiring_kind(self) -> WiringKind:
        return _WIRING_KIND_OF_CORE[self.kind]


_WIRING_KIND_OF_CORE: dict[str, WiringKind] = {
    "transformer": "seq2seq",
    "encoder+decoder": "seq2seq",
    "encoder": "encoder",
    "rnn": "rnn",
}


def _stack_kind(module: ModuleSpec) -> str | None:
    """ "encoder" / "decoder" for an encoder or decoder stack (or one layer), else None."""
    if module.type in ("TransformerEncoder", "TransformerEncoderLayer"):
        return "encoder"
    if module.type in ("TransformerDecoder", "TransformerDecoderLayer"):
        return "decoder"
    if module.type in ("ModuleList", "Sequential") and module.children:
        types = {c.type for c in module.children}
        if types == {"TransformerEncoderLayer"}:
            return "encoder"
        if types == {"TransformerDecoderLayer"}:
            return "decoder"
    return None


def _cores(parts: list[ModuleSpec]) -> tuple[Core | None, str]:
    transformers = [p for p in parts if p.type == "Transformer"]
    encoders = [p for p in parts if _stack_kind(p) == "encoder"]
    decoders = [p for p in parts if _stack_kind(p) == "decoder"]
    rnns = [p for p in parts if p.type in RNN_TYPES]
    found = len(transformers) + len(encoders) + len(decoders) + len(rnns)
    if found == 0:
        return None, "no Transformer, encoder or decoder stack or RNN to arrange a forward around"
    if len(transformers) == 1 and found == 1:
        return _core("transformer", (transformers[0],), layer_width(transformers[0]))
    if len(encoders) == 1 and len(decoders) == 1 and found == 2:
        d_enc, d_dec = layer_width(encoders[0]), layer_width(decoders[0])
        if d_enc != d_dec:
            return None, (
                f"the encoder {encoders[0].path} is {d_enc} wide but the decoder "
                f"{decoders[0].path} is {d_dec} wide"
            )
        return _core("encoder+decoder", (encoders[0], decoders[0]), d_enc)
    if len(encoders) == 1 and found == 1:
        return _core("encoder", (encoders[0],), layer_width(encoders[0]))
    if len(rnns) == 1 and found == 1:
        args = rnns[0].args
        out = (args.get("proj_size") or args["hidden_size"]) * (2 if args["bidirectional"] else 1)
        return Core("rnn", (rnns[0],), args["input_size"], out), ""
    names = ", ".join(f"{p.path} ({p.type})" for p in transformers + encoders + decoders + rnns)
    return None, f"more cores than one forward can arrange: {names}"


def _core(kind: str, modules: tuple[ModuleSpec, ...], width: int | None) -> tuple[Core | None, str]:
    """A Transformer core of a known width (d_model), or why there is none."""
    if width is None:
        return None, f"{modules[0].path or 'the root'} shows no d_model"
    return Core(kind, modules, width, width), ""


# ---------------------------------------------------------------- roles of the other parts


@dataclass(frozen=True)
class Slot:
    """A module or a raw tensor that can take a role."""

    path: str
    type: str  # the module type, or "tensor" for a raw table
    order: int  # construction order among the parts
    module: ModuleSpec | None = None
    shape: tuple[int, ...] = ()
    original: ModuleSpec | None = None  # set when this slot reads the module as another type

    @property
    def retyped(self) -> tuple[ModuleSpec, ModuleSpec] | None:
        """(as inferred, as this forward reads it), when the forward retypes the module."""
        if self.original is None or self.module is None:
            return None
        return self.original, self.module

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @property
    def args(self) -> Mapping[str, Any]:
        """The module's constructor arguments; a raw tensor has none."""
        return {} if self.module is None else self.module.args


def _as_embedding(slot: Slot) -> Slot | None:
    """A bias-free Linear whose shapes also fit an Embedding, read as one: a token table
    under a name that does not say so (`tok`, `vocab`) is a Linear to the detectors, and
    only its place in a forward tells."""
    m = slot.module
    if m is None or m.type != "Linear" or m.args.get("bias") or "Embedding" not in m.alternatives:
        return None
    args = {"num_embeddings": m.args["out_features"], "embedding_dim": m.args["in_features"]}
    view = replace(
        m,
        type="Embedding",
        args=args,
        alternatives=("Linear",),
        evidence=f"{m.evidence}; read as Embedding({args['num_embeddings']}, "
        f"{args['embedding_dim']}) by the forward that feeds it tokens",
        note="",
    )
    return replace(slot, type="Embedding", module=view, original=m)


def _options(slot: Slot, core: Core) -> list[tuple[str, Slot]]:
    """(role, slot) pairs: the slot as inferred, and read as an Embedding where it may be."""
    options = [(role, slot) for role in _roles_for(slot, core)]
    view = _as_embedding(slot)
    if view is not None:
        options += [(role, view) for role in _roles_for(view, core) if role == "adapter"]
    return options


def _roles_for(slot: Slot, core: Core) -> list[str]:
    """Every role the slot's type and widths allow around this core."""
    roles: list[str] = []
    m, args = slot.module, (slot.module.args if slot.module is not None else {})
    attention = core.kind != "rnn"
    if slot.type == "Embedding":
        if args["embedding_dim"] == core.width_in:
            roles.append("adapter")
            if attention:
                roles.append("positional")
    elif slot.type == "Linear" and args["out_features"] == core.width_in:
        roles.append("adapter")
    if attention and slot.type == "PositionalEncoding" and args["shape"][-1] == core.width_in:
        roles.append("positional")
    if attention and slot.type == "tensor" and _is_table(slot.shape, core.width_in):
        roles.append("positional")
    if m is not None and _norm_width(m) == core.width_out:
        roles.append("norm")
    widths = mlp_widths(m) if m is not None else None
    if widths is not None and widths[0] == core.width_out:
        roles.append("head")
    return roles


def _is_table(shape: tuple[int, ...], width: int) -> bool:
    if len(shape) == 3:
        return shape[-1] == width and (shape[0] == 1 or shape[1] == 1)
    return len(shape) == 2 and shape[-1] == width


@dataclass(frozen=True)
class Assignment:
    adapters: tuple[Slot, ...]
    positional: tuple[Slot, ...]
    norm: Slot | None
    head: Slot | None


def _assignments(slots: list[Slot], core: Core) -> Iterator[Assignment]:
    options = [_options(s, core) for s in slots]
    seq2seq = core.wiring_kind == "seq2seq"
    for combo in itertools.product(*options):
        by_role: dict[str, list[Slot]] = {}
        for role, slot in combo:
            by_role.setdefault(role, []).append(slot)
        adapters = tuple(by_role.get("adapter", ()))
        positional = tuple(by_role.get("positional", ()))
        if len(adapters) > (2 if seq2seq else 1) or len(positional) > (2 if seq2seq else 1):
            continue
        if len(by_role.get("norm", ())) > 1 or len(by_role.get("head", ())) > 1:
            continue
        kinds = {_adapter_dtype(a) for a in adapters}
        if seq2seq and len(adapters) == 2 and len(kinds) > 1:
            continue  # source and target are both tokens or both vectors
        if any(p.type == "Embedding" for p in positional) and not adapters:
            continue  # learned positions are added to something an adapter made
        if len(positional) == 2 and {p.type for p in positional} != {"PositionalEncoding"}:
            continue
        norm = by_role.get("norm", [None])[0]
        head = by_role.get("head", [None])[0]
        yield Assignment(adapters, positional, norm, head)


@dataclass(frozen=True)
class Arrangement:
    """One ordered reading of an assignment: which slot feeds which input, which head."""

    core: Core
    adapters: tuple[Slot, ...]  # (source, target) for a seq2seq; one may serve both
    positional: tuple[Slot, ...]
    norm: Slot | None
    head_slot: Slot | None
    head: str | None  # "part" (head_slot), "tied" (to the last adapter) or None

    @property
    def seq2seq(self) -> bool:
        return self.core.wiring_kind == "seq2seq"


def _adapter_dtype(slot: Slot) -> str:
    return "long" if slot.type == "Embedding" else "float"


# ---------------------------------------------------------------- building the hypotheses


def _prior(assignment: Assignment, core: Core, order: Mapping[str, int]) -> tuple[float, str]:
    """A small score from construction order and names, with the reasons for it."""
    score, reasons = 0.0, []
    core_order = min(order[m.path] for m in core.modules)
    placed: list[tuple[Slot | None, str]] = [(s, "adapter") for s in assignment.adapters]
    placed += [(s, "positional") for s in assignment.positional]
    placed += [(assignment.norm, "norm"), (assignment.head, "head")]
    for slot, role in placed:
        if slot is None:
            continue
        if HINTS[role].search(slot.name):
            score += 2
            reasons.append(f"'{slot.name}' is named like a {role}")
        before = slot.order < core_order
        if before == (role in ("adapter", "positional")):
            score += 1
        if role == "head" and slot.type == "Embedding":
            score -= 3
    if assignment.head is not None:
        score += 1  # a model usually ends in a layer of its own
    retyped = [s.path for s in assignment.adapters if s.original is not None]
    if retyped:
        score -= 1  # the detectors' reading stands unless the forward needs another
        reasons.append(f"{', '.join(retyped)} read as a token table")
    if len(assignment.adapters) == 1 and core.wiring_kind == "seq2seq":
        score += 0.5  # one adapter shared by source and target is the usual pattern
    return score, "; ".join(reasons)


def _head_variants(assignment: Assignment, core: Core) -> list[str | None]:
    """ "part" when a head module is assigned; else "none", and "tied" when an embedding fits."""
    if assignment.head is not None:
        return ["part"]
    variants: list[str | None] = [None]
    tokens = [a for a in assignment.adapters if a.type == "Embedding"]
    if tokens and tokens[-1].args["embedding_dim"] == core.width_out:
        variants.insert(0, "tied")
    return variants


def _sequence_wirings(
    parts: list[ModuleSpec], tables: Mapping[str, tuple[int, ...]]
) -> tuple[list[tuple[float, Wiring]], str]:
    core, why = _cores(parts)
    if core is None:
        return [], why
    core_paths = {m.path for m in core.modules}
    slots = [
        Slot(p.path, p.type, i, module=p) for i, p in enumerate(parts) if p.path not in core_paths
    ]
    slots += [
        Slot(path, "tensor", len(parts) + i, shape=shape)
        for i, (path, shape) in enumerate(tables.items())
    ]
    if len(slots) > MAX_PARTS:
        return [], f"{len(slots)} modules besides the core are more than a forward is guessed for"
    order = {p.path: i for i, p in enumerate(parts)}
    unplaceable = [s for s in slots if s.type != "tensor" and not _options(s, core)]
    if unplaceable:
        width = (
            f"{core.width_in}"
            if core.width_in == core.width_out
            else f"{core.width_in} in, {core.width_out} out"
        )
        listed = ", ".join(f"{s.path} ({_describe(s)})" for s in unplaceable)
        return [], (
            f"found {_core_text(core)} ({width} wide), but {listed} cannot feed it, follow it "
            "or be its positions: the sizes do not chain"
        )
    found: list[tuple[float, Wiring]] = []
    for assignment in _assignments(slots, core):
        used_tables = {s.path for s in assignment.positional if s.type == "tensor"}
        if any(s.type == "tensor" and s.path not in used_tables for s in slots):
            continue  # every raw tensor must be used by the forward
        prior, reason = _prior(assignment, core, order)
        for head in _head_variants(assignment, core):
            for bonus, wiring in _wirings_for(assignment, core, head, reason):
                bonus += 0.5 if head == "tied" else 0.0
                # Ties keep the order of discovery (construction order first).
                found.append((prior + bonus - 0.001 * len(found), wiring))
    if not found:
        return [], f"found {_core_text(core)}, but its neighbours cannot be arranged around it"
    return found, ""


def _describe(slot: Slot) -> str:
    m = slot.module
    if m is None:
        return f"tensor {slot.shape}"
    if m.type == "Linear":
        return f"Linear {m.args['in_features']}→{m.args['out_features']}"
    if m.type == "Embedding":
        return f"Embedding {m.args['num_embeddings']} × {m.args['embedding_dim']}"
    return m.type


def _core_text(core: Core) -> str:
    if core.kind == "encoder+decoder":
        return f"an encoder ({core.modules[0].path}) and a decoder ({core.modules[1].path})"
    what = {"transformer": "a Transformer", "encoder": "an encoder stack", "rnn": "an RNN"}
    return f"{what[core.kind]} ({core.modules[0].path or 'the root'})"


def _wirings_for(
    assignment: Assignment, core: Core, head: str | None, reason: str
) -> Iterator[tuple[float, Wiring]]:
    """One wiring, or one per order of two separate source/target modules, with a bonus
    for the order that names and the head's vocabulary suggest."""
    seq2seq = core.wiring_kind == "seq2seq"
    adapter_orders: list[tuple[Slot, ...]] = [assignment.adapters]
    if seq2seq and len(assignment.adapters) == 2:
        adapter_orders = [assignment.adapters, assignment.adapters[::-1]]
    positional_orders: list[tuple[Slot, ...]] = [assignment.positional]
    if seq2seq and len(assignment.positional) == 2:
        positional_orders = [assignment.positional, assignment.positional[::-1]]
    for adapters in adapter_orders:
        for positional in positional_orders:
            bonus = _source_first(adapters, assignment.head) + _source_first(positional, None)
            arrangement = Arrangement(
                core, adapters, positional, assignment.norm, assignment.head, head
            )
            yield bonus, _wiring(arrangement, reason)


def _source_first(pair: tuple[Slot, ...], head: Slot | None) -> float:
    """How well (pair[0], pair[1]) reads as (source, target): by names, then by the head's
    vocabulary matching the target embedding."""
    if len(pair) != 2:
        return 0.0
    first, second = pair
    bonus = 0.0
    if SOURCE_NAME.search(first.name) and not SOURCE_NAME.search(second.name):
        bonus += 1
    if TARGET_NAME.search(second.name) and not TARGET_NAME.search(first.name):
        bonus += 1
    if head is not None and head.type == "Linear" and first.type == second.type == "Embedding":
        vocab = head.args["out_features"]
        sizes = (first.args["num_embeddings"], second.args["num_embeddings"])
        if sizes[1] == vocab != sizes[0]:
            bonus += 1
    return bonus


def _wiring(a: Arrangement, reason: str) -> Wiring:
    core, adapters, positional = a.core, a.adapters, a.positional
    roles: dict[str, str] = {}
    if a.seq2seq:
        if adapters:
            roles["src_embedding"] = adapters[0].path
            roles["tgt_embedding"] = adapters[-1].path
        if len(positional) == 2:
            roles["src_pos_encoding"], roles["tgt_pos_encoding"] = (p.path for p in positional)
        if core.kind == "transformer":
            roles["transformer"] = core.modules[0].path
        else:
            roles["encoder"], roles["decoder"] = (m.path for m in core.modules)
    else:
        if adapters:
            roles["embedding"] = adapters[0].path
        roles["encoder" if core.kind == "encoder" else "rnn"] = core.modules[0].path
    if len(positional) == 1:
        slot = positional[0]
        role = {"Embedding": "pos_embedding", "tensor": "pos_table"}.get(slot.type, "pos_encoding")
        roles[role] = slot.path
    if a.norm is not None:
        roles["final_norm"] = a.norm.path
    if a.head == "part" and a.head_slot is not None:
        roles["head"] = a.head_slot.path
    elif a.head == "tied":
        roles["tied_head"] = adapters[-1].path
    hidden = _forward_choices(core, adapters, positional)
    inputs = _inputs(core, adapters, positional)
    by_path = {s.path: s.retyped for s in adapters if s.retyped is not None}
    retyped = tuple(pair for pair in by_path.values() if pair is not None)
    return Wiring(
        kind=core.wiring_kind,
        roles=roles,
        inputs=inputs,
        description=_flow(a, inputs),
        name=_name(a),
        reason=reason or "types and widths chain",
        hidden=hidden,
        retyped=retyped,
    )


def _forward_choices(
    core: Core, adapters: tuple[Slot, ...], positional: tuple[Slot, ...]
) -> tuple[str, ...]:
    names = ["batch_first"]
    if core.kind != "rnn":
        names.append("causal_mask")
        if adapters:
            names.append("scale_embedding")
        if positional:
            names.append(POS_DIM)
    if core.wiring_kind != "seq2seq":
        names.append(REDUCE)
    return tuple(names)


def _inputs(
    core: Core, adapters: tuple[Slot, ...], positional: tuple[Slot, ...]
) -> tuple[ModelInput, ...]:
    lengths = [positional_length(s) for p in positional if (s := _table_shape(p))]
    limit = min(lengths) if lengths else None

    def one(name: str, adapter: Slot | None, wanted: int) -> ModelInput:
        length = wanted if limit is None else max(1, min(wanted, limit))
        if adapter is not None and adapter.type == "Embedding":
            return ModelInput(name, "long", (EXAMPLE_BATCH, length))
        width = adapter.args["in_features"] if adapter is not None else core.width_in
        return ModelInput(name, "float", (EXAMPLE_BATCH, length, width))

    if core.wiring_kind == "seq2seq":
        src = adapters[0] if adapters else None
        tgt = adapters[-1] if adapters else None
        return (
            one("src", src, EXAMPLE_SEQUENCE),
            one("tgt", tgt, EXAMPLE_TARGET_SEQUENCE),
        )
    adapter = adapters[0] if adapters else None
    name = "tokens" if adapter is not None and adapter.type == "Embedding" else "x"
    return (one(name, adapter, EXAMPLE_SEQUENCE - (1 if core.kind == "rnn" else 0)),)


def _table_shape(slot: Slot) -> tuple[int, ...] | None:
    if slot.type == "tensor":
        return slot.shape
    if slot.type == "PositionalEncoding":
        return tuple(slot.args["shape"])
    if slot.type == "Embedding":
        return (slot.args["num_embeddings"], slot.args["embedding_dim"])
    return None


def _name(a: Arrangement) -> str:
    """A short, unique-enough name: the parts in the order data meets them."""
    pieces = []
    if a.adapters:
        if len(a.adapters) == 2:
            pieces.append(f"{a.adapters[0].path} (src) + {a.adapters[1].path} (tgt)")
        elif a.seq2seq:
            pieces.append(f"{a.adapters[0].path} (shared)")
        else:
            pieces.append(a.adapters[0].path)
    if a.positional:
        pieces.append("+" + " / ".join(p.path for p in a.positional))
    pieces.append(" / ".join(m.path for m in a.core.modules))
    if a.norm is not None:
        pieces.append(a.norm.path)
    if a.head == "part" and a.head_slot is not None:
        pieces.append(a.head_slot.path)
    elif a.head == "tied":
        pieces.append(f"tied to {a.adapters[-1].path}")
    else:
        pieces.append("no head")
    return " → ".join(pieces)


def _flow(a: Arrangement, inputs: tuple[ModelInput, ...]) -> str:
    """The description people read: one step per part, ' → ' between them."""
    core = a.core
    steps = ["(" + ", ".join(i.name for i in inputs) + ")"]
    if a.adapters:
        shared = a.seq2seq and len(a.adapters) == 1
        steps.append(
            " / ".join(f"{s.path} ({_describe(s)})" for s in a.adapters)
            + (" shared by both inputs" if shared else "")
        )
    if a.positional:
        steps.append("+ positions from " + " / ".join(p.path for p in a.positional))
    core_types = {
        "transformer": "Transformer",
        "encoder+decoder": "encoder / decoder",
        "encoder": "encoder stack",
        "rnn": core.modules[0].type,
    }[core.kind]
    steps.append(" / ".join(m.path for m in core.modules) + f" ({core_types})")
    if a.norm is not None:
        steps.append(f"{a.norm.path} ({a.norm.type})")
    if a.head == "part" and a.head_slot is not None:
        steps.append(f"{a.head_slot.path} ({_describe(a.head_slot)})")
    elif a.head == "tied":
        steps.append(f"output layer tied to {a.adapters[-1].path}")
    return " → ".join(steps)


# ---------------------------------------------------------------- stacks called in order


def _stack(module: ModuleSpec) -> list[ModuleSpec] | None:
    """The leaves a sequential forward calls in order, or None if one cannot be chained
    (its family says how a stack passes data through it, or that none can)."""
    leaves: list[ModuleSpec] = []
    for child in module.children:
        if child.type in ("Sequential", "ModuleList"):
            inner = _stack(child)
            if inner is None:
                return None
            leaves.extend(inner)
        elif child.type == "Unknown" or _step_of(child) is not None:
            leaves.append(child)
        else:
            return None
    return leaves


def _step_of(module: ModuleSpec) -> StackStep | None:
    found = layer_type(module.type)
    return None if found is None or found.stack is None else found.stack(module.args)


def _chain_input(leaves: list[ModuleSpec]) -> ModelInput | None:
    """The example input of a stack whose sizes chain, or None when they do not."""
    layers = [m for m in leaves if m.type != "Unknown"]
    if not layers:
        return None
    channels: int | None = None  # set while the data is a feature map
    features: int | None = None  # set while the data is a vector
    spatial_total: int | None = None  # positions per channel where a Linear flattens a map
    may_flatten = False  # a parameter-less module since the last layer could be a Flatten
    for layer in leaves:
        if layer.type == "Unknown":
            may_flatten = may_flatten or name_hint(layer.name) in (None, "Flatten")
            continue
        step = _step_of(layer)
        assert step is not None  # _stack keeps only modules a stack can call
        if step.reads == "vector":
            assert step.width_in is not None
            if channels is not None:
                if step.width_in % channels or not may_flatten:
                    return None
                spatial_total = spatial_total or step.width_in // channels
            elif features is not None and step.width_in != features:
                return None
            channels, features = None, step.width_out
        elif step.reads == "map":
            if features is not None or (channels is not None and step.width_in != channels):
                return None
            channels = step.width_out
        elif step.reads == "tokens":
            if layer is not layers[0]:
                return None
            features = step.width_out
        else:  # "same": keeps the size (a norm)
            expected = channels if channels is not None else features
            width = step.width_in
            if expected is not None and width is not None and width != expected:
                return None
            if expected is None and step.map_when_first:
                channels = width
            elif expected is None:
                features = width
        may_flatten = False
    return _first_input(layers[0], spatial_total)


def _first_input(first: ModuleSpec, spatial_total: int | None) -> ModelInput | None:
    found = layer_type(first.type)
    if found is None or found.example is None:
        return None
    return found.example(first.args, spatial_total)


def _sequentials(root: ModuleSpec, shapes: Mapping[str, tuple[int, ...]] | None) -> list[Wiring]:
    """The stack called in order, as inferred; then as many readings of it with
    size-keeping leaves read as a runner-up type another family declared for the same
    keys (PReLU for a weight-only LayerNorm): the shapes cannot tell, the data can."""
    if root.type not in CONTAINERS:
        return []
    leaves = _stack(root)
    if not leaves:
        return []
    model_input = _chain_input(leaves)
    if model_input is None:
        return []
    wirings = [
        Wiring(
            kind="sequential",
            roles={},
            inputs=(model_input,),
            description="x → each child in order (as nn.Sequential does; a ModuleList's items alike)",
            name="each child in order",
            reason="every child is a layer and their sizes chain",
        )
    ]
    choices = [(i, views) for i, leaf in enumerate(leaves) if (views := _views(leaf, shapes))]
    for picked in itertools.islice(_retypings(choices), MAX_RETYPED_STACKS):
        read = list(leaves)
        for i, view in picked:
            read[i] = view
        model_input = _chain_input(read)
        if model_input is None:
            continue
        retyped = tuple((leaves[i], view) for i, view in picked)
        names = ", ".join(f"{view.path} as {view.type}" for _, view in retyped)
        wirings.append(
            Wiring(
                kind="sequential",
                roles={},
                inputs=(model_input,),
                description=f"x → each child in order, {names}",
                name=f"each child in order, {names}",
                reason=f"{names}: the same keys, a different layer; only the data can tell",
                retyped=retyped,
            )
        )
    return wirings


def _views(leaf: ModuleSpec, shapes: Mapping[str, tuple[int, ...]] | None) -> list[ModuleSpec]:
    """`leaf` read as each runner-up that keeps the size and whose family declares it
    stores the same keys (`LayerType.same_keys_as`, either way round)."""
    found = layer_type(leaf.type)
    if shapes is None or found is None or leaf.weight_norm is not None:
        return []
    step = _step_of(leaf)
    if step is None or step.reads != "same":
        return []
    prefix = f"{leaf.path}." if leaf.path else ""
    own = {key[len(prefix) :]: shapes[key] for key in leaf.keys if key in shapes}
    views = []
    for name in leaf.alternatives:
        other = layer_type(name)
        if other is None or other.rebuild is None or other.stack is None:
            continue
        if name not in found.same_keys_as and leaf.type not in other.same_keys_as:
            continue
        rebuilt = other.rebuild(own)
        if rebuilt is None or other.stack(rebuilt[0]).reads != "same":
            continue
        args, hidden = rebuilt
        rest = tuple(a for a in (leaf.type, *leaf.alternatives) if a != name)
        views.append(
            replace(
                leaf,
                type=name,
                args=args,
                hidden=hidden,
                alternatives=rest,
                evidence=f"{leaf.evidence}; read as {name} by this forward",
                note="",
            )
        )
    return views


def _retypings(
    choices: list[tuple[int, list[ModuleSpec]]],
) -> Iterator[tuple[tuple[int, ModuleSpec], ...]]:
    """(leaf index, view) sets, fewest retyped leaves first."""
    for count in range(1, len(choices) + 1):
        for subset in itertools.combinations(choices, count):
            for views in itertools.product(*(v for _, v in subset)):
                yield tuple(zip((i for i, _ in subset), views, strict=True))


# ---------------------------------------------------------------- entry points


def propose_wirings(
    root: ModuleSpec,
    tables: Mapping[str, tuple[int, ...]] | None = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> tuple[tuple[Wiring, ...], str]:
    """Every forward that fits, best-ranked first; or none, with a sentence saying why.

    `tables` are raw tensors held directly by containers (path -> shape): they may be
    positional tables that a forward adds. `shapes` (every key's) let a stack offer its
    leaves read as the runner-up types their keys equally fit.
    """
    if root.type in COMPOSITES:  # an RNN, a Transformer (or its parts), an attention
        return (), f"The root itself is a {root.type}; it keeps its own forward."
    tables = dict(tables or {})
    parts = parts_of(root)
    scored, why = _sequence_wirings(parts, tables)
    wirings = [w for _, w in sorted(scored, key=lambda pair: -pair[0])]
    sequential = _sequentials(root, shapes) if not tables else []
    if sequential:
        # A stack competes with the sequence hypotheses; it is the usual reading of a
        # Sequential root, and the last resort of a container.
        if root.type == "Sequential" or not wirings:
            wirings[:0] = sequential
        else:
            wirings += sequential
    if not wirings:
        if root.type not in CONTAINERS:
            return (), f"The root is a single {root.type}; no forward around it was recognised."
        return (), (
            f"No forward wiring fits these weights: {why or 'not a chain of layers'}; the rebuilt "
            "model loads the weights but has no forward."
        )
    return tuple(_unique_names(wirings)), ""


def _unique_names(wirings: list[Wiring]) -> Iterator[Wiring]:
    seen: dict[str, int] = {}
    for wiring in wirings:
        count = seen.get(wiring.name, 0)
        seen[wiring.name] = count + 1
        yield wiring if not count else replace(wiring, name=f"{wiring.name} #{count + 1}")


def output_module(wiring: Wiring | None) -> str | None:
    """The module that makes the forward's output (the head, or the embedding a tied head
    reads); None for a stack, whose last layer is its output."""
    if wiring is None:
        return None
    return wiring.roles.get("head") or wiring.roles.get("tied_head")


def recognise_wiring(root: ModuleSpec) -> tuple[Wiring | None, str]:
    """The best-ranked wiring, or None with a sentence saying why none was recognised."""
    wirings, why = propose_wirings(root)
    return (wirings[0] if wirings else None), why
