"""Which data this session uses and how its entries feed the model (shared by steps 2-4)."""

from __future__ import annotations

from dataclasses import replace

from dashboard import state, ui


def open_data(studio: state.Studio, source: state.Source) -> bool:
    """Open a dataset and guess its mapping; a file that cannot be read keeps the previous
    dataset, one whose mapping cannot be guessed is kept for the person to map."""
    try:
        dataset = state.open_dataset(source)
    except Exception as exc:  # noqa: BLE001 - shown as a sentence, the app goes on
        studio.data_error = ui.problem(
            exc,
            "reading the data",
            prefix=f"Could not use {source.label}: ",
            hint="Use a dict of tensors (.pt), a .safetensors or a .npz file.",
        )
        return False
    assert studio.recovery is not None, "a checkpoint is open before its data"
    studio.dataset_source = replace(source, payload=None)  # the bytes are not needed any more
    studio.recovery.use_data(dataset)  # values found on other data are unchecked again
    studio.scored_names.clear()
    remap(studio)
    return True


def remap(studio: state.Studio) -> None:
    """Guess how this session's dataset feeds the current model (a new dataset, or another
    checkpoint opened); when no guess fits, the person chooses the entries in step 3."""
    recovery = studio.recovery
    if recovery is None or recovery.dataset is None:
        return
    studio.values_version += 1  # step 3's boxes show the new mapping
    try:
        recovery.map()
    except Exception as exc:  # noqa: BLE001 - shown as a sentence, the app goes on
        studio.data_error = ui.problem(
            exc,
            "matching the data to the model",
            prefix=f"The inputs and target of {recovery.dataset.source_name} could not be guessed: ",
            hint="Choose them below.",
        )
        return
    studio.data_error = None


def ensure_demo_data(studio: state.Studio) -> None:
    """The demo checkpoint comes with its dataset: open it without a click."""
    opened = studio.opened
    if (
        opened is not None
        and opened.source.kind == "demo"
        and studio.dataset is None
        and studio.data_error is None
    ):
        open_data(studio, state.demo_data_source())


def ready(studio: state.Studio) -> bool:
    """Data mapped to a model that can run on it."""
    return runnable(studio) and studio.dataset is not None and studio.mapping is not None


def runnable(studio: state.Studio) -> bool:
    """A forward was recognised: the model can be run on data at all."""
    return studio.spec is not None and studio.spec.wiring is not None
