"""Numbers for reading: 1.2 M parameters, 3.4 MiB, 0.0123 loss, 1 min 5 s.

The formats are the library's (the command line prints the same); this adds what only
the pages need.
"""

from __future__ import annotations

from recovery_core import humanize

count = humanize.count
size = humanize.size
loss = humanize.loss
seconds = humanize.seconds
shape = humanize.shape
times = humanize.times


def value(v: object) -> str:
    """A hyperparameter value as a person reads it: True -> yes, 1e-05 -> 1e-05."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)
