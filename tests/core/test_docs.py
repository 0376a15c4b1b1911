"""docs/spec-conventions.md's tables say what the registry says: every layer type and
every hidden value, with the same hidden names, candidates and defaults, nothing extra.

The registry and the families' declarations are the truth the code runs on; the page is
what people read. These tests parse the page's two tables and compare them, so adding a
family (or a hidden value) without its rows, or changing a default without the page,
fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from recovery_core.infer import catalog, infer_spec
from recovery_core.io.checkpoint import Checkpoint
from tests.zoo import ZOO

DOC = Path(__file__).resolve().parents[2] / "docs" / "spec-conventions.md"
# Documented types no family names: plain containers, and our parameter-less slot.
NOT_FAMILIES = {"Sequential", "ModuleList", "Module", "Unknown"}
UNKNOWN_ROW = "<path> of an Unknown module"
PER_LAYER_ROW = re.compile(r"^<conv path>\.(\w+)$")
PARENTHESES = re.compile(r"\([^()]*\)")
LEADING_VALUE = re.compile(r"""^(\([^)]*\)|"[^"]*"|'[^']*'|[-+\w.]+)""")


def _table(header: str) -> list[list[str]]:
    """The rows (cells stripped) of the table whose header row starts with `header`."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:  # past the header and the |---| line
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def _words(text: str) -> str:
    """A cell without its asides (parentheses, backticks)."""
    text = text.replace("`", "")
    while PARENTHESES.search(text):
        text = PARENTHESES.sub("", text)
    return text


def _leading_value(cell: str) -> Any:
    found = LEADING_VALUE.match(cell.replace("`", "").strip())
    assert found is not None, f"no value leads {cell!r}"
    return ast.literal_eval(found.group(1))


def _type_rows() -> dict[str, list[str]]:
    """type name -> its row (a row may list several types)."""
    rows = {}
    for row in _table("| type | args"):
        for name in re.split(r"[,/]", _words(row[0])):
            assert name.strip().isidentifier(), f"{row[0]!r} is not a list of type names"
            assert name.strip() not in rows, f"{name.strip()} has two rows"
            rows[name.strip()] = row
    return rows


def _setting_rows() -> dict[str, list[str]]:
    """declared name (a convolution's own by its last part) -> its row."""
    rows = {}
    for row in _table("| name | candidates | default |"):
        name = _words(row[0]).strip()
        if name.startswith("<path>"):
            name = UNKNOWN_ROW
        per_layer = PER_LAYER_ROW.match(name)
        name = per_layer.group(1) if per_layer else name
        assert name not in rows, f"{name} has two rows"
        rows[name] = row
    return rows


def test_every_registered_type_has_a_row_and_every_row_is_a_type():
    registered = {t.name for family in catalog.FAMILIES for t in family.types}
    documented = set(_type_rows())
    assert documented - NOT_FAMILIES == registered


def test_each_type_row_names_the_hidden_values_its_types_read():
    model_wide = {name for name, s in catalog.SETTINGS.items() if not s.per_layer}
    rows = _type_rows()
    for name, row in rows.items():
        if name in NOT_FAMILIES:
            continue
        in_row = {w for w in re.findall(r"\w+", _words(row[2])) if w in model_wide}
        # A row listing several types names what any of them reads (RNN's nonlinearity).
        together = set()
        for other, other_row in rows.items():
            found = catalog.layer_type(other)
            if other_row is row and found is not None:
                together |= set(found.hidden)
        assert in_row == together, f"{row[0]}: the page says {in_row}, the families {together}"


def test_a_convolutions_own_values_are_on_its_row():
    conv = _type_rows()["Conv2d"][2]
    for name, setting in catalog.SETTINGS.items():
        if setting.per_layer:
            assert f"`<path>.{name}`" in conv


def test_every_declared_hidden_value_has_a_row_and_every_row_is_declared():
    assert set(_setting_rows()) - {UNKNOWN_ROW} == set(catalog.SETTINGS)


@pytest.mark.parametrize("name", sorted(catalog.SETTINGS))
def test_a_fixed_candidate_list_and_default_read_as_on_the_page(name):
    setting = catalog.SETTINGS[name]
    row = _setting_rows()[name]
    if setting.candidates is None:  # worked out from the model: the page says how
        assert row[1] and row[2]
        return
    assert _leading_value(row[1]) == setting.candidates
    assert _leading_value(row[2]) == setting.default
    assert type(_leading_value(row[2])) is type(setting.default)


def test_every_name_a_family_reads_is_declared_once_with_a_meaning():
    for family in catalog.FAMILIES:
        for layer in family.types:
            for name in (*layer.hidden, *layer.renames):
                assert name in catalog.SETTINGS, f"{layer.name} reads undeclared {name!r}"
    labels: dict[str, str] = {}
    for setting in catalog.SETTINGS.values():
        assert setting.meaning.endswith(".") and len(setting.meaning.split()) >= 6
        # A few words for the dashboard's list, told apart from every other value's.
        assert setting.label[:1].isupper() and len(setting.label.split()) <= 5, setting.name
        assert labels.setdefault(setting.label, setting.name) == setting.name
        if setting.candidates is not None:
            assert setting.default in setting.candidates


def test_a_checkpoints_metadata_names_belong_to_one_value_each():
    owners: dict[str, str] = {}
    for name, setting in catalog.SETTINGS.items():
        for entry in setting.metadata_names:
            assert owners.setdefault(entry, name) == name, f"{entry} carries two values"


def test_every_hidden_value_inference_lists_has_a_meaning_and_a_label_for_people():
    unexplained = set()
    for case in ZOO:
        spec = infer_spec(Checkpoint.from_state_dict(case.make().state_dict()))
        slots = {m.path for m in spec.modules() if m.type == "Unknown"}
        for hp in spec.free:
            explained = catalog.setting_meaning(hp.name) and catalog.setting_label(hp.name)
            if hp.name not in slots and not explained:
                unexplained.add(f"{case.name}: {hp.name}")
    assert not unexplained


def test_a_convolutions_own_value_is_explained_by_its_last_part():
    assert catalog.setting_meaning("blocks.0.stride") == catalog.SETTINGS["stride"].meaning
    assert catalog.setting_meaning("stride") == catalog.SETTINGS["stride"].meaning
    assert catalog.setting_meaning("net.1") == ""  # an Unknown slot: its evidence speaks
    assert catalog.setting_meaning("encoder.nhead") == ""  # model-wide values have no path


def test_a_modules_hidden_values_are_those_its_type_declares():
    # The page's type table is checked against LayerType.hidden; this holds the detectors
    # to the same declaration (a convolution's own values are named by its path).
    undeclared = set()
    for case in ZOO:
        spec = infer_spec(Checkpoint.from_state_dict(case.make().state_dict()))
        for module in spec.modules():
            found = catalog.layer_type(module.type)
            if found is None:
                continue
            for name in module.hidden:
                declared = catalog.setting(name)
                per_layer = declared is not None and declared.per_layer
                if name not in found.hidden and not per_layer:
                    undeclared.add(f"{case.name}: {module.path} ({module.type}) hides {name}")
    assert not undeclared
