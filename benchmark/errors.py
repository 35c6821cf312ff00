"""The one exception base of haaqi-bench.

Every error that a user can cause (a bad file, an unknown name, an
out-of-range level) is raised as :class:`BenchError` or a subclass, with a
message that says what was wrong and what to do. The CLI prints the message
and exits with status 2; nothing is written.
"""


class BenchError(Exception):
    """A user-facing error with a clear message."""


class AudioError(BenchError):
    """An audio file or signal that cannot be used (unreadable, silent, NaN, wrong layout)."""
