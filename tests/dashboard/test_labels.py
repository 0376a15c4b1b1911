"""Settings are named for people, with the code name after it."""

from __future__ import annotations

from dashboard.status import label


def test_a_convolutions_own_settings_are_named_by_its_layer():
    assert label("blocks.0.stride") == "Stride of blocks.0 (blocks.0.stride)"
    assert label("up.3.output_padding") == "Output padding of up.3 (up.3.output_padding)"


def test_known_settings_read_plainly_and_unknown_ones_keep_their_name():
    assert label("nhead") == "Attention heads (nhead)"
    assert label("stem.1") == "stem.1"  # a parameter-free slot: its path is its name
