"""Build the module tree from the key tree: detect each module, recurse into the rest.

Module paths come from the keys and from the pickle's `_metadata` (which also lists
parameter-less modules such as activations). Each path is offered to the detectors;
a composite that matches claims its subtree (children are explained for display only);
a path no detector explains is a container whose children are explained in turn.

Keys no detector explains are kept as is on their owning module (`infer/kept.py`): a
parameter or buffer of that name and shape, so the rebuilt model still loads them.
A weight-normed module is shown to the detectors as if it held its plain weight
(`infer/families/weight_norm.py`).

Container rule: a module whose children are all integer-named is a Sequential when
parameter-less children sit among them (seen in `_metadata`, or as gaps in the
numbering: 0, 3, 5 means 1, 2 and 4 hold no weights), else a ModuleList (with Sequential
as the alternative); any other container is a plain "Module". Parameter-less children
of containers become "Unknown" modules whose type is a free hyperparameter named after
their path.
"""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass, field, fields, replace
from typing import Any

from recovery_core.infer.detection import Detection, Group
from recovery_core.infer.families.hf_conv1d import proves_transposed
from recovery_core.infer.families.weight_norm import unwrap_weight_norm
from recovery_core.infer.kept import kept_tensor
from recovery_core.infer.registry import DETECTORS, SAME_KEYS
from recovery_core.io.checkpoint import Checkpoint, TensorInfo
from recovery_core.model.names import is_index
from recovery_core.model.spec import ModuleSpec

# Leaf names of a convolution's weight: plain, or weight-normed (infer/families/weight_norm.py).
CONV_WEIGHTS = frozenset({"weight", "original1", "weight_v"})
MAX_GAPS = 10_000  # parameter-less children inferred from holes in one numbering, at most
# Numbered containers with at least this many children explain each kind of child once
# (`_Siblings`); fewer are explained one by one (the result is the same).
GROUP_SIBLINGS_FROM = 3


def parent_of(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


@dataclass
class KeyTree:
    """Module paths in definition order, and which keys sit under each."""

    infos: dict[str, TensorInfo]
    children: dict[str, list[str]] = field(default_factory=dict)  # path -> child names
    # path -> its keys relative to it, in file order: made when first asked (`keys_under`)
    under: dict[str, dict[str, TensorInfo]] = field(default_factory=dict)
    listed: set[str] = field(default_factory=set)  # paths seen in `_metadata`
    _convs: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # per parent, cached
    _position: dict[str, int] = field(default_factory=dict)  # path -> index among its siblings
    tied: dict[str, tuple[str, ...]] = field(default_factory=dict)  # key -> keys sharing storage
    order: dict[str, int] = field(default_factory=dict)  # key -> position in the file
    transposed_names: frozenset[str] = frozenset()  # module names proven to store (in, out)
    _widths: dict[str, int | None] = field(default_factory=dict)  # path -> its output width
    conv_before: list[int | None] = field(default_factory=list)  # key position -> earlier conv dims
    _sorted: list[str] = field(default_factory=list)  # the keys in text order: a path's are a range
    _relative: dict[str, str] = field(default_factory=dict)  # one string per distinct relative key

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint) -> KeyTree:
        tree = cls(infos={t.name: t for t in checkpoint.tensors})
        tree.listed = set(checkpoint.module_paths)
        tree.order = {name: i for i, name in enumerate(tree.infos)}
        for key, first in checkpoint.tied.items():
            tree.tied[key] = (*tree.tied.get(key, ()), first)
            tree.tied[first] = (*tree.tied.get(first, ()), key)
        # `_metadata` order is definition order, parameter-less modules included.
        for path in checkpoint.module_paths:
            tree._add_path(path)
        transposed = set()
        last = None  # spatial dims of the last convolution weight seen, in file order
        for name, info in tree.infos.items():  # one pass: 100,000 keys are common
            path, _, leaf = name.rpartition(".")
            tree.conv_before.append(last)
            if leaf in CONV_WEIGHTS and 3 <= len(info.shape) <= 5:
                last = len(info.shape) - 2
            if leaf == "bias":
                weight = tree.infos.get(name[: -len("bias")] + "weight")
                if weight is not None and proves_transposed(weight.shape, info.shape):
                    transposed.add(path.rpartition(".")[2])
            tree._add_path(path)
        tree.transposed_names = frozenset(transposed)
        tree._sorted = sorted(tree.infos)
        return tree

    def _add_path(self, path: str) -> None:
        if path in self.children:
            return  # its ancestors are registered already
        self.children[path] = []
        if path:
            parent = parent_of(path)
            self._add_path(parent)
            self.children[parent].append(path.rsplit(".", 1)[-1])

    def keys_under(self, path: str) -> dict[str, TensorInfo]:
        """The keys under `path`, relative to it, in file order. Made when first asked:
        filing every key under every ancestor up front held ~65 MiB at 100,000 keys,
        most of it for modules no detector looks into (the grouped siblings' parts)."""
        if not path:
            return self.infos  # relative to the root, a key is its own name
        found = self.under.get(path)
        if found is None:
            found = self.under[path] = self._collect(path)
        return found

    def _collect(self, path: str) -> dict[str, TensorInfo]:
        prefix = f"{path}."
        names = self._sorted
        # Every name starting with "path." sorts in ["path.", "path/"): "/" follows ".".
        inside = names[bisect.bisect_left(names, prefix) : bisect.bisect_left(names, f"{path}/")]
        if len(inside) > 1:
            inside.sort(key=self.order.__getitem__)
        size, infos, relative = len(prefix), self.infos, self._relative
        found = {}
        for name in inside:
            short = name[size:]
            found[relative.setdefault(short, short)] = infos[name]
        return found

    def neighbour_conv_dims(self, path: str) -> int | None:
        """Spatial dims of the nearest sibling whose weight looks like a convolution's."""
        if not path:
            return None
        parent = parent_of(path)
        if parent not in self._convs:
            self._convs[parent] = self._conv_siblings(parent)
        convs = self._convs[parent]
        index = self._position[path]
        nearest = min(
            ((abs(i - index), i > index, dims) for i, dims in convs if i != index), default=None
        )
        return None if nearest is None else nearest[2]

    def input_width(self, path: str) -> int | None:
        """The output width of the nearest module defined before `path` (climbing to the
        parent's earlier siblings when it is the first child), if one shows a width."""
        while path:
            parent = parent_of(path)
            siblings = self.children.get(parent, [])
            index = self._index_among_siblings(path)
            for earlier in reversed(siblings[:index]):
                width = self._output_width(join(parent, earlier))
                if width is not None:
                    return width
            path = parent
        return None

    def next_linear_width(self, path: str) -> int | None:
        """in_features of the Linear defined right after `path` among its siblings (its
        first key a 2-D weight), if the next module with weights is one."""
        if not path:
            return None
        parent = parent_of(path)
        siblings = self.children.get(parent, [])
        for later in siblings[self._index_among_siblings(path) + 1 :]:
            keys = self.keys_under(join(parent, later))
            if keys:
                first = next(iter(keys.values()))
                return first.shape[1] if len(first.shape) == 2 else None
        return None

    def conv_dims_before(self, path: str) -> int | None:
        """Spatial dims of the last convolution defined before the keys under `path`."""
        keys = self.keys_under(path)
        first = min((self.order[info.name] for info in keys.values()), default=None)
        return None if first is None else self.conv_before[first]

    def _index_among_siblings(self, path: str) -> int:
        if path not in self._position:
            for i, name in enumerate(self.children.get(parent_of(path), [])):
                self._position[join(parent_of(path), name)] = i
        return self._position.get(path, 0)

    def _output_width(self, path: str) -> int | None:
        """The length of the last 1-D tensor under `path`: its last bias, norm or scale."""
        if path not in self._widths:
            keys = self.keys_under(path)
            self._widths[path] = next(
                (info.shape[0] for info in reversed(keys.values()) if len(info.shape) == 1), None
            )
        return self._widths[path]

    def _conv_siblings(self, parent: str) -> list[tuple[int, int]]:
        """(position, spatial dims) of the children of `parent` with a 3-5-D weight."""
        found = []
        for i, name in enumerate(self.children.get(parent, [])):
            self._position[join(parent, name)] = i
            info = self.infos.get(join(join(parent, name), "weight"))
            if info is not None and 3 <= len(info.shape) <= 5:
                found.append((i, len(info.shape) - 2))
        return found


@dataclass
class Composer:
    tree: KeyTree
    unexplained: list[str] = field(default_factory=list)
    # Every neighbourhood fact a detector asked, (kind, path, answer), for each sibling
    # being recorded as its group's representative (`_Siblings`).
    _logs: list[list[tuple[int, str, int | None]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        tree = self.tree
        self._facts = (
            tree.neighbour_conv_dims,
            tree.input_width,
            tree.next_linear_width,
            tree.conv_dims_before,
        )
        self._asks = tuple(functools.partial(self.ask, kind) for kind in range(len(self._facts)))

    def release(self) -> None:
        """Drop the askers (partials of `ask`: a cycle through this composer)."""
        self._asks = self._facts = ()  # type: ignore[assignment]

    def ask(self, kind: int, path: str) -> int | None:
        """A neighbourhood fact (`_facts[kind]` of `path`), noted for every recording."""
        answer = self._facts[kind](path)
        for log in self._logs:
            log.append((kind, path, answer))
        return answer

    def explain(self, path: str, inside_composite: bool = False) -> ModuleSpec | None:
        keys = self.tree.keys_under(path)
        if not keys:
            if inside_composite:
                return None  # dropout/activation inside a layer torch builds in one call
            return ModuleSpec(
                path=path,
                type="Unknown",
                hidden=(path,),
                evidence=(
                    "listed in the checkpoint's module list but holds no weights"
                    if path in self.tree.listed
                    else "a gap in its parent's numbering: a module without weights"
                )
                + ": an activation, dropout, flatten or similar",
            )
        group = Group(
            path=path,
            keys=keys,
            children=tuple(self.tree.children.get(path, ())),
            neighbour_conv_dims_of=self._asks[0],
            width_of=self._asks[1],
            next_linear_of=self._asks[2],
            conv_dims_before_of=self._asks[3],
            tied=self.tree.tied,
            order=self.tree.order,
            transposed_names=self.tree.transposed_names,
        )
        unwrapped = unwrap_weight_norm(group)
        if unwrapped is not None:
            plain, norm, why = unwrapped
            for detector in DETECTORS:
                detection = detector(plain)
                if detection is not None and not detection.composite:
                    spec = self._detected(plain, detection, inside_composite)
                    return replace(
                        spec,
                        keys=tuple(join(path, k) for k in keys),
                        weight_norm=norm,
                        evidence=f"{why}; {spec.evidence}",
                    )
        for detector in DETECTORS:
            detection = detector(group)
            if detection is not None:
                return self._detected(group, detection, inside_composite)
        return self._container(group, inside_composite)

    def _detected(self, group: Group, found: Detection, inside_composite: bool) -> ModuleSpec:
        children: tuple[ModuleSpec, ...] = ()
        if found.composite:
            children = tuple(
                spec
                for name in group.children
                if (spec := self.explain(join(group.path, name), inside_composite=True)) is not None
            )
        certain = inside_composite  # a composite's parts are exactly what torch builds
        runners_up = () if certain else _runners_up(group, found)
        note = found.note
        if runners_up:
            also = " and ".join(runners_up)
            note = (
                f"{note} {also} stores the same keys too."
                if note
                else f"{also} stores the same keys."
            )
        return ModuleSpec(
            path=group.path,
            type=found.type,
            args=dict(found.args),
            hidden=found.hidden,
            keys=tuple(join(group.path, k) for k in group.direct),
            children=children,
            evidence=found.evidence,
            alternatives=() if certain else found.alternatives + runners_up,
            note="" if certain else note,
        )

    def _container(self, group: Group, inside_composite: bool) -> ModuleSpec:
        direct = group.direct
        for key in direct:
            self.unexplained.append(join(group.path, key))
        kept = tuple(kept_tensor(name, info) for name, info in direct.items())
        names = list(group.children)
        numbered = bool(names) and all(is_index(n) for n in names)
        if numbered and not inside_composite:
            # A gap in the numbering (0, 3, 5) is a parameter-less child, even without `_metadata`.
            present = set(names)  # a set: containers can hold many thousands of children
            # A huge index ("net.99999999999") is not a list with billions of holes to fill.
            top = min(max(map(int, names)), len(names) + MAX_GAPS)
            gaps = [str(i) for i in range(top) if str(i) not in present]
            names = sorted(names + gaps, key=int)
        if numbered and len(names) >= GROUP_SIBLINGS_FROM:
            children = _Siblings(self, inside_composite).explain(group.path, names)
        else:
            children = tuple(
                spec
                for name in names
                if (spec := self.explain(join(group.path, name), inside_composite)) is not None
            )
        keys = tuple(join(group.path, k) for k in direct)
        if numbered:
            spec = self._numbered(group, children, inside_composite)
            return replace(spec, keys=keys, kept=kept)
        evidence = "a container: its keys belong to its children"
        if kept:
            evidence = "a container holding tensors no layer type explains, kept as is"
        return ModuleSpec(
            path=group.path,
            type="Module",
            keys=keys,
            children=children,
            evidence=evidence,
            kept=kept,
        )

    def _numbered(
        self, group: Group, children: tuple[ModuleSpec, ...], inside_composite: bool
    ) -> ModuleSpec:
        empty = [c.name for c in children if c.type == "Unknown"]
        names = [c.name for c in children] or list(group.children)
        span = f"{names[0]} … {names[-1]}"
        if inside_composite:  # e.g. TransformerEncoder.layers: torch builds a ModuleList
            return ModuleSpec(
                path=group.path,
                type="ModuleList",
                children=children,
                evidence=f"the layer list {span} of a composite",
            )
        if empty:
            return ModuleSpec(
                path=group.path,
                type="Sequential",
                children=children,
                evidence=f"children {span} are numbered and parameter-less ones "
                f"({', '.join(empty)}) sit among them → Sequential",
            )
        return ModuleSpec(
            path=group.path,
            type="ModuleList",
            children=children,
            evidence=f"children {span} are numbered and all hold weights → ModuleList",
            alternatives=("Sequential",),
            note="Numbered children without parameter-less ones between them may be a ModuleList or a Sequential.",
        )


Fact = tuple[int, str, int | None]  # (kind, path asked about, answer): `Composer.ask`


@dataclass(frozen=True)
class _Representative:
    """The first sibling of a kind, explained in full, and what explaining it took."""

    path: str
    spec: ModuleSpec
    facts: tuple[Fact, ...]  # every neighbourhood fact its detectors asked, in order
    unexplained: tuple[str, ...]  # keys its explanation left unexplained
    reusable: bool  # its spec names no path of its own outside the fields moved here


class _Siblings:
    """Numbered siblings that hold the same relative keys, shapes and dtypes, and the same
    parameter-less modules (`blocks.0` ... `blocks.16665`), explained once per kind.

    The detectors see only a group's relative keys, its names and the neighbourhood facts
    it asks for (`Composer.ask`). So a sibling of the same kind whose facts, asked again of
    its own paths, give the representative's answers would be explained exactly as the
    representative was: it gets the representative's spec with its own paths. Tied keys,
    a path written into a text, or an answer that differs make a sibling explained on its
    own (it then represents its kind). 50,000 modules cost ~10 s explained one by one.
    """

    def __init__(self, composer: Composer, inside_composite: bool) -> None:
        self.composer, self.inside_composite = composer, inside_composite
        self.kinds: dict[tuple[Any, ...], _Representative] = {}

    def explain(self, parent: str, names: list[str]) -> tuple[ModuleSpec, ...]:
        found = (self._one(join(parent, name)) for name in names)
        return tuple(spec for spec in found if spec is not None)

    def _one(self, path: str) -> ModuleSpec | None:
        kind = self._kind(path)
        if kind is None:
            return self.composer.explain(path, self.inside_composite)
        first = self.kinds.get(kind)
        if first is not None and first.reusable and self._same_facts(first, path):
            size = len(first.path)
            self.composer.unexplained.extend(path + k[size:] for k in first.unexplained)
            return _moved(first.spec, size, path, self.composer.tree.infos)
        first = self.kinds[kind] = self._recorded(path)
        return first.spec

    def _kind(self, path: str) -> tuple[Any, ...] | None:
        """What the detectors can see below `path`, or None when it must be explained on
        its own (no keys, or tied ones: their evidence reaches outside the subtree)."""
        tree = self.composer.tree
        keys = tree.keys_under(path)
        if not keys or tree.tied and any(info.name in tree.tied for info in keys.values()):
            return None
        modules: list[tuple[str, bool]] = []
        pending = [(path, "")]
        while pending:  # every module below, parameter-less ones and `_metadata`'s included
            at, relative = pending.pop()
            modules.append((relative, at in tree.listed))
            for name in reversed(tree.children.get(at, ())):
                pending.append((join(at, name), join(relative, name)))
        shapes = tuple((k, info.shape, info.dtype) for k, info in keys.items())
        return shapes, tuple(modules)

    def _recorded(self, path: str) -> _Representative:
        composer = self.composer
        facts: list[Fact] = []
        before = len(composer.unexplained)
        composer._logs.append(facts)
        try:
            spec = composer.explain(path, self.inside_composite)
        finally:
            composer._logs.pop()
        assert spec is not None  # a module with keys is always explained
        inside = all(_within(asked, path) for _, asked, _ in facts)
        return _Representative(
            path,
            spec,
            tuple(facts),
            tuple(composer.unexplained[before:]),
            inside and _paths_only_where_moved(spec, path),
        )

    def _same_facts(self, first: _Representative, path: str) -> bool:
        size, ask = len(first.path), self.composer.ask
        return all(ask(kind, path + asked[size:]) == answer for kind, asked, answer in first.facts)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root + ".")


def _paths_only_where_moved(spec: ModuleSpec, root: str) -> bool:
    """True when `root`'s path (and its name, quoted) appears in no text of its spec: only
    in the paths, keys and hidden names `_moved` rewrites."""
    quoted = f"'{root.rpartition('.')[2]}'"
    for module in spec.walk():
        texts = (
            module.evidence,
            module.note,
            repr(module.args),
            repr(module.kept),
            repr(module.alternatives),
            repr(module.weight_norm),
            *(h for h in module.hidden if not _within(h, root)),
        )
        if any(root in text or quoted in text for text in texts):
            return False
    return True


def _moved(spec: ModuleSpec, size: int, path: str, infos: dict[str, TensorInfo]) -> ModuleSpec:
    """`spec` of the module at a path `size` characters long, as the one at `path`: its
    paths and keys moved, every other field as it is (a field added later included).
    A moved key is the checkpoint's own string (`infos`), not a copy of it per module,
    and the args are the same dict: a spec is never changed in place (a new value makes
    a new dict), and a copy per sibling was ~9 MiB at 100,000 keys."""
    keys = (path + k[size:] for k in spec.keys)
    return _copied(
        spec,
        path=path + spec.path[size:],
        args=spec.args,
        hidden=tuple(path + h[size:] if _within(h, spec.path[:size]) else h for h in spec.hidden),
        keys=tuple(infos[k].name if k in infos else k for k in keys),
        children=tuple(_moved(child, size, path, infos) for child in spec.children),
    )


# `dataclasses.replace` runs __init__ (~4.5 us a module, 66,000 modules at 100,000 keys);
# a ModuleSpec whose __init__ only stores its fields is copied field for field instead
# (~1 us), with every field kept, one added later included.
_PLAIN_INIT = not hasattr(ModuleSpec, "__post_init__") and all(f.init for f in fields(ModuleSpec))


def _copied(spec: ModuleSpec, **changes: Any) -> ModuleSpec:
    if not _PLAIN_INIT or type(spec) is not ModuleSpec:
        return replace(spec, **changes)
    copy = object.__new__(ModuleSpec)
    state = copy.__dict__
    state.update(spec.__dict__)
    state.update(changes)
    return copy


def _runners_up(group: Group, found: Detection) -> tuple[str, ...]:
    """Types of other families that declare they store the same keys as the one found
    (`LayerType.same_keys_as`) and can hold these: offered after the detector's own."""
    if found.composite:
        return ()
    others = SAME_KEYS.get(found.type, ())
    if not others:
        return ()
    shapes = {k: v.shape for k, v in group.direct.items()}
    return tuple(
        t.name
        for t in others
        if t.name not in found.alternatives and t.rebuild is not None and t.rebuild(shapes)
    )


def compose_tree(checkpoint: Checkpoint) -> tuple[ModuleSpec, tuple[str, ...]]:
    """The module tree and the keys no module explains."""
    composer = Composer(KeyTree.from_checkpoint(checkpoint))
    try:
        root = composer.explain("")
    finally:
        # Its askers are partials of its own method (a cycle): without this, the key tree
        # (~40 MiB at 100,000 keys) lived on until a collection, and inspect pauses it.
        composer.release()
    assert root is not None  # the root always has keys: the checkpoint has tensors
    ties = tuple(
        (key, first) for key, first in checkpoint.tied.items() if key in composer.tree.infos
    )
    return replace(root, ties=ties), tuple(composer.unexplained)


def module_notes(root: ModuleSpec) -> list[str]:
    """One sentence per distinct note, naming every module it applies to."""
    paths_by_note: dict[str, list[str]] = {}
    for module in root.walk():
        if module.note:
            paths_by_note.setdefault(module.note, []).append(module.path or "(root)")
    return [f"{', '.join(paths)}: {note}" for note, paths in paths_by_note.items()]
