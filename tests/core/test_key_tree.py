"""The key tree files each key under its module path and every ancestor's only when a
detector asks for that path, and gives exactly what filing every key up front gave."""

from __future__ import annotations

from recovery_core.infer.compose import Composer, KeyTree
from recovery_core.io.checkpoint import Checkpoint, TensorInfo


def _checkpoint(names: list[str]) -> Checkpoint:
    infos = tuple(TensorInfo(name, (2,), "float32", 2, 8) for name in names)
    return Checkpoint(tensors=infos, format="memory", _read=lambda name: None)  # type: ignore[arg-type,return-value]


def _filed_up_front(names: list[str]) -> dict[str, dict[str, str]]:
    """Every key under its path and each ancestor's, relative to each, in file order."""
    under: dict[str, dict[str, str]] = {}
    for name in names:
        path = name.rpartition(".")[0]
        while True:
            under.setdefault(path, {})[name[len(path) + 1 :] if path else name] = name
            if not path:
                break
            path = path.rpartition(".")[0]
    return under


# File order differs from text order; near-prefixes ("a.1" and "a.10", "ab"), a key that
# is also a path ("x" and "x.y"), empty parts ("a..b"), a "/" (sorts right after ".").
NAMES = [
    "z.weight", "a.10.w", "a.1.w", "a.1.b", "ab.w", "a..b", "x", "x.y", "a.1/.w",
    "é.w", "a.2.inner.0.w", "a.2.inner.0.b", "a.10.b", "a/", "b",
]  # fmt: skip


def test_keys_under_each_path_are_what_filing_every_key_up_front_gives() -> None:
    tree = KeyTree.from_checkpoint(_checkpoint(NAMES))
    expected = _filed_up_front(NAMES)
    paths = {name[:i] for name in NAMES for i in range(len(name) + 1)} | set(expected)
    for path in sorted(paths):
        got = {relative: info.name for relative, info in tree.keys_under(path).items()}
        want = expected.get(path, {})
        assert list(got.items()) == list(want.items()), path


def test_keys_are_filed_only_under_the_paths_a_detector_asks_about() -> None:
    """300 identical blocks of two layers: the blocks' parts are never looked into (the
    siblings are explained once per kind), so their keys are never filed under them."""
    names = [f"blocks.{i}.{part}.{leaf}" for i in range(300) for part in ("mix", "out") for leaf in ("weight", "bias")]  # fmt: skip
    infos = tuple(
        TensorInfo(n, (4, 4) if n.endswith("weight") else (4,), "float32", 16, 64) for n in names
    )
    checkpoint = Checkpoint(tensors=infos, format="memory", _read=lambda name: None)  # type: ignore[arg-type,return-value]
    composer = Composer(KeyTree.from_checkpoint(checkpoint))
    root = composer.explain("")
    assert root is not None and len(list(root.walk())) == 2 + 300 * 3
    filed = set(composer.tree.under)
    parts = {f"blocks.{i}.{part}" for i in range(300) for part in ("mix", "out")}
    assert len(filed & parts) <= 4, sorted(filed & parts)[:10]
    assert {f"blocks.{i}" for i in range(300)} <= filed
