"""Typed errors for everything a user can get wrong.

Each message is one sentence a person can act on: it names the file, key or shape
involved and says what to do. Assertions remain for our own invariants only.
"""


class RecoveryError(Exception):
    """Base class: anything that went wrong because of the input, not because of a bug."""


class CheckpointFormatError(RecoveryError):
    """The file is not a checkpoint we can read: wrong format, truncated, empty, no tensors."""


class UnsafeCheckpointError(RecoveryError):
    """The file would need code to run (arbitrary pickle globals, TorchScript, oversized parts)."""


class InferenceError(RecoveryError):
    """The weights do not fit any architecture we can explain."""


class HyperparameterError(RecoveryError, ValueError):
    """A hyperparameter was set to a name or value the spec does not allow."""


class BuildError(RecoveryError):
    """The inferred architecture could not be turned into a working module."""


class DataError(RecoveryError):
    """The dataset cannot be read or does not fit the model's inputs."""


class TrainingError(RecoveryError):
    """Training could not start or could not go on."""


class ExportError(RecoveryError):
    """An exported file could not be written or failed its verification."""


class LimitExceededError(UnsafeCheckpointError):
    """A file asked for more work than a `LoadLimits` (or `BuildLimits`) field allows.

    `limit` is the field's name, so a person who trusts the file knows what to raise.
    """

    def __init__(self, message: str, *, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


class ReaderCrashedError(CheckpointFormatError):
    """The isolated reader process died on the file (a signal); the app itself is unaffected."""


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """Text from a file made safe for a terminal: control characters (ESC, NUL, BEL, ...)
    and lone surrogates become visible escapes such as \\x1b, so a key name cannot
    move the cursor, retitle the window or fail the encoder."""
    kept = "\n\t" if keep_newlines else ""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in kept:
            out.append(ch)
        elif code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif 0xD800 <= code < 0xE000 or code in (0x2028, 0x2029):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)
