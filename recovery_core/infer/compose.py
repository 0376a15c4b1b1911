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
import operator
from array import array
from collections.abc import Iterator, Mapping
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


class FilePositions(Mapping[str, int]):
    """Key -> its position in the file, read from the keys in text order and each one's
    position beside it (a dict of 100,000 keys was ~6.5 MiB). The keys under a path are
    a range of the text order (`span`)."""

    __slots__ = ("names", "positions")

    def __init__(self, in_file_order: list[str]) -> None:
        text_order = sorted(range(len(in_file_order)), key=in_file_order.__getitem__)
        self.names = [in_file_order[i] for i in text_order]
        self.positions = array("q", text_order)

    def span(self, path: str) -> tuple[int, int]:
        """The range of text-order indices of the keys under `path` (every key for "")."""
        if not path:
            return 0, len(self.names)
        # Every name starting with "path." sorts in ["path.", "path/"): "/" follows ".".
        names = self.names
        return bisect.bisect_left(names, f"{path}."), bisect.bisect_left(names, f"{path}/")

    def _index(self, key: object) -> int:
        names = self.names
        i = bisect.bisect_left(names, key) if type(key) is str else len(names)
        return i if i < len(names) and names[i] == key else -1

    def __getitem__(self, key: str) -> int:
        i = self._index(key)
        if i < 0:
            raise KeyError(key)
        return self.positions[i]

    def __contains__(self, key: object) -> bool:
        return self._index(key) >= 0

    def __iter__(self) -> Iterator[str]:  # in file order, as the dict it replaces
        by_position = sorted(range(len(self.names)), key=self.positions.__getitem__)
        return (self.names[i] for i in by_position)

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class KeyTree:
    """Module paths in definition order, and which keys sit under each."""

    infos: dict[str, TensorInfo]
    children: dict[str, list[str]] = field(default_factory=dict)  # path -> child names
    # path -> its keys relative to it, in file order, for the modules being explained
    # (`keys_under`, `forget`)
    under: dict[str, dict[str, TensorInfo]] = field(default_factory=dict)
    listed: set[str] = field(default_factory=set)  # paths seen in `_metadata`
    _convs: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # per parent, cached
    _position: dict[str, int] = field(default_factory=dict)  # path -> index among its siblings
    tied: dict[str, tuple[str, ...]] = field(default_factory=dict)  # key -> keys sharing storage
    order: FilePositions = field(default_factory=lambda: FilePositions([]))
    transposed_names: frozenset[str] = frozenset()  # module names proven to store (in, out)
    _widths: dict[str, int | None] = field(default_factory=dict)  # path -> its output width
    conv_before: list[int | None] = field(default_factory=list)  # key position -> earlier conv dims

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint) -> KeyTree:
        tree = cls(infos={t.name: t for t in checkpoint.tensors})
        tree.listed = set(checkpoint.module_paths)
        tree.order = FilePositions(list(tree.infos))
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
        return tree

    def _add_path(self, path: str) -> None:
        if path in self.children:
            return  # its ancestors are registered already
        self.children[path] = []
        if path:
            parent = parent_of(path)
            self._add_path(parent)
            self.children[parent].append(path.rsplit(".", 1)[-1])

    def keys_under(self, path: str, keep: bool = False) -> dict[str, TensorInfo]:
        """The keys under `path`, relative to it, in file order, made when asked. `keep`
        holds them until `forget(path)`: the composer keeps a module's keys while it
        explains it, when its detectors and their facts ask again. Nothing else is kept:
        filing every key under every ancestor held ~65 MiB at 100,000 keys, and keeping
        each dict once made ~30 MiB (the numbered container's 100,000 relative keys, a
        dict per grouped sibling)."""
        if not path:
            return self.infos  # relative to the root, a key is its own name
        found = self.under.get(path)
        if found is None:
            found = self._collect(path)
            if keep:
                self.under[path] = found
        return found

    def forget(self, path: str) -> None:
        self.under.pop(path, None)

    def _collect(self, path: str) -> dict[str, TensorInfo]:
        names, positions = self.order.names, self.order.positions
        lo, hi = self.order.span(path)
        inside = range(lo, hi) if hi - lo < 2 else sorted(range(lo, hi), key=positions.__getitem__)
        size, infos = len(path) + 1, self.infos
        return {names[i][size:]: infos[names[i]] for i in inside}

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
        lo, hi = self.order.span(path)
        return self.conv_before[min(self.order.positions[lo:hi])] if lo < hi else None

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
        tree = self.tree
        keys = tree.keys_under(path, keep=True)  # its detectors and their facts ask again
        try:
            if not keys:
                if inside_composite:
                    return None  # dropout/activation inside a layer torch builds in one call
                return _parameterless(path, path in tree.listed)
            found = self._detect(path, keys, inside_composite)
        finally:
            tree.forget(path)
        if isinstance(found, ModuleSpec):
            return found
        # A container: its children are explained next, without its own key dict alive
        # meanwhile (under a numbered container, every key of the file relative to it).
        del keys
        return self._container(path, found, inside_composite)

    def _detect(
        self, path: str, keys: dict[str, TensorInfo], inside_composite: bool
    ) -> ModuleSpec | dict[str, TensorInfo]:
        """The module at `path` as a detector explains it, else its direct keys (a container)."""
        tree = self.tree
        group = Group(
            path=path,
            keys=keys,
            children=tuple(tree.children.get(path, ())),
            neighbour_conv_dims_of=self._asks[0],
            width_of=self._asks[1],
            next_linear_of=self._asks[2],
            conv_dims_before_of=self._asks[3],
            tied=tree.tied,
            order=tree.order,
            transposed_names=tree.transposed_names,
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
        return group.direct

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

    def _container(
        self, path: str, direct: dict[str, TensorInfo], inside_composite: bool
    ) -> ModuleSpec:
        for key in direct:
            self.unexplained.append(join(path, key))
        kept = tuple(kept_tensor(name, info) for name, info in direct.items())
        names = list(self.tree.children.get(path, ()))
        numbered = bool(names) and all(is_index(n) for n in names)
        if numbered and not inside_composite:
            # A gap in the numbering (0, 3, 5) is a parameter-less child, even without `_metadata`.
            present = set(names)  # a set: containers can hold many thousands of children
            # A huge index ("net.99999999999") is not a list with billions of holes to fill.
            top = min(max(map(int, names)), len(names) + MAX_GAPS)
            gaps = [str(i) for i in range(top) if str(i) not in present]
            names = sorted(names + gaps, key=int)
        if numbered and len(names) >= GROUP_SIBLINGS_FROM:
            children = _Siblings(self, inside_composite).explain(path, names)
        else:
            children = tuple(
                spec
                for name in names
                if (spec := self.explain(join(path, name), inside_composite)) is not None
            )
        keys = tuple(join(path, k) for k in direct)
        if numbered:
            spec = self._numbered(path, children, inside_composite)
            return replace(spec, keys=keys, kept=kept)
        evidence = "a container: its keys belong to its children"
        if kept:
            evidence = "a container holding tensors no layer type explains, kept as is"
        return ModuleSpec(
            path=path,
            type="Module",
            keys=keys,
            children=children,
            evidence=evidence,
            kept=kept,
        )

    def _numbered(
        self, path: str, children: tuple[ModuleSpec, ...], inside_composite: bool
    ) -> ModuleSpec:
        empty = [c.name for c in children if c.type == "Unknown"]
        names = [c.name for c in children] or list(self.tree.children.get(path, ()))
        span = f"{names[0]} … {names[-1]}"
        if inside_composite:  # e.g. TransformerEncoder.layers: torch builds a ModuleList
            return ModuleSpec(
                path=path,
                type="ModuleList",
                children=children,
                evidence=f"the layer list {span} of a composite",
            )
        if empty:
            return ModuleSpec(
                path=path,
                type="Sequential",
                children=children,
                evidence=f"children {span} are numbered and parameter-less ones "
                f"({', '.join(empty)}) sit among them → Sequential",
            )
        return ModuleSpec(
            path=path,
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


def _parameterless(path: str, listed: bool) -> ModuleSpec:
    """A module without weights: seen in `_metadata`, or a gap in its parent's numbering."""
    return ModuleSpec(
        path=path,
        type="Unknown",
        hidden=(path,),
        evidence=(
            "listed in the checkpoint's module list but holds no weights"
            if listed
            else "a gap in its parent's numbering: a module without weights"
        )
        + ": an activation, dropout, flatten or similar",
    )


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


# Every field of a ModuleSpec, in its constructor's order: a copy passes them positionally
# (~1.9 us a module against `dataclasses.replace`'s ~2.8 us; 66,000 at 100,000 keys), a
# field added later included. `replace` would refuse an init=False field; so does this.
_FIELDS = tuple(f.name for f in fields(ModuleSpec))
assert all(f.init for f in fields(ModuleSpec)), "a ModuleSpec copy passes every field"
_FIELD_VALUES = operator.attrgetter(*_FIELDS)
_POSITION = {name: i for i, name in enumerate(_FIELDS)}


def _copied(spec: ModuleSpec, **changes: Any) -> ModuleSpec:
    if type(spec) is not ModuleSpec:  # a subclass may have fields of its own
        return replace(spec, **changes)
    values = list(_FIELD_VALUES(spec))
    for name, value in changes.items():
        values[_POSITION[name]] = value
    return ModuleSpec(*values)


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
