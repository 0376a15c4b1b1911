"""The pickle scan's memo kept as a list (dense indices) and the reader of plain state
dicts that runs no unpickler: each held to the path it shortcuts.
"""

from __future__ import annotations

import io
import pickle

import pytest

from recovery_core.errors import RecoveryError
from recovery_core.io.checkpoint import LoadLimits
from recovery_core.io.pickle_scan import scan_pickle, scan_pickle_bytes


def _scan_both(data: bytes, limits: LoadLimits) -> tuple[object, object]:
    def outcome(fast: bool) -> object:
        facts: dict[str, object] = {}
        try:
            if fast:
                return scan_pickle_bytes(data, "f.pt", limits, facts=facts), facts
            return scan_pickle(io.BytesIO(data), "f.pt", limits, facts=facts), facts
        except RecoveryError as exc:
            return type(exc).__name__, str(exc)

    return outcome(True), outcome(False)


@pytest.mark.parametrize(
    "data",
    [
        # a memo index far past the next one, then fetched: the memo is not dense
        b"\x80\x02}r\x40\x42\x0f\x00X\x01\x00\x00\x00aj\x40\x42\x0f\x00s.",
        # an index rewritten (below the next one) and a string key fetched back
        b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01q\x00h\x01K\x01s.",
        # a storage class memoized at a sparse index, then misused through the memo
        b"\x80\x02ctorch\nFloatStorage\nr\x00\x00\x01\x00j\x00\x00\x01\x00K\x05\x85R.",
        pickle.dumps({"a": [1, 2], "b": "a"}, protocol=4),  # MEMOIZE, not PUT
        pickle.dumps({"a": [1, 2], "b": ("a",)}, protocol=0),  # text PUT and GET
    ],
    ids=["sparse", "rewritten", "misused class", "memoize", "text memo"],
)
def test_memo_of_any_shape_is_scanned_as_the_pickletools_scan_does(data: bytes) -> None:
    fast, slow = _scan_both(data, LoadLimits())
    assert fast == slow
