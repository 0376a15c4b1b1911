"""This process's own peak memory, for the fuzz's "nothing above 1 GiB" check.

Not `resource.getrusage(RUSAGE_SELF).ru_maxrss`: on Linux, exec carries the spawning
process's peak RSS over into the new process's ru_maxrss (the kernel keeps the larger of
the two in the signal struct at exec). A fuzz started by a pytest process that had
already grown to 1 GiB running the suite reported that 1 GiB as its own peak (seed
1796125411 "peaked at 1024 MiB" that way; replayed alone, the same mutants peak at
~235 MiB). VmHWM in /proc/self/status belongs to this process's address space only.
"""

from __future__ import annotations

import resource


def peak_rss_mib() -> float:
    """The high-water mark of this process's resident memory, in MiB."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    # Elsewhere (macOS: bytes, BSD: kB) ru_maxrss is the only figure; it may include
    # the parent's peak as explained above.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
