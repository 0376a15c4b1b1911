"""The key tree gathers the keys under a module path only when a detector asks for that
path, keeps them only while that module is explained, and gives exactly what filing
every key up front gave."""

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


def test_keys_are_gathered_only_for_the_paths_a_detector_asks_about_and_kept_only_while_explained(
    monkeypatch,
) -> None:
    """300 identical blocks of two layers: the blocks' parts are never looked into (the
    siblings are explained once per kind), and a module's keys are held only while it is
    being explained: at most one dict per level of the tree at a time, none at the end."""
    names = [f"blocks.{i}.{part}.{leaf}" for i in range(300) for part in ("mix", "out") for leaf in ("weight", "bias")]  # fmt: skip
    infos = tuple(
        TensorInfo(n, (4, 4) if n.endswith("weight") else (4,), "float32", 16, 64) for n in names
    )
    checkpoint = Checkpoint(tensors=infos, format="memory", _read=lambda name: None)  # type: ignore[arg-type,return-value]
    composer = Composer(KeyTree.from_checkpoint(checkpoint))
    gathered: list[str] = []
    most_kept = 0
    collect = KeyTree._collect

    def watched(tree: KeyTree, path: str) -> dict[str, TensorInfo]:
        nonlocal most_kept
        gathered.append(path)
        most_kept = max(most_kept, len(tree.under))
        return collect(tree, path)

    monkeypatch.setattr(KeyTree, "_collect", watched)
    root = composer.explain("")
    assert root is not None and len(list(root.walk())) == 2 + 300 * 3
    parts = {f"blocks.{i}.{part}" for i in range(300) for part in ("mix", "out")}
    assert len(set(gathered) & parts) <= 4, sorted(set(gathered) & parts)[:10]
    assert {f"blocks.{i}" for i in range(300)} <= set(gathered)
    assert most_kept <= 3  # "blocks", "blocks.N" and one part: the path being explained
    assert composer.tree.under == {}
