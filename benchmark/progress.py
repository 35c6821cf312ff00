"""Progress of long commands: a live bar on a terminal, timed plain lines in a log.

Under a batch system (SLURM, ``nohup``, CI) stderr is a file, and a live bar
draws nothing there until the command ends. So when the console is not a
terminal, a line such as ``trials 912/2016 (45 %), 2:01 elapsed, ETA 2:26`` is
written every :data:`LINE_EVERY_S` seconds, and once at the end.
"""

from __future__ import annotations

import contextlib
import time

#: Seconds between progress lines when the output is not a terminal.
LINE_EVERY_S = 30.0


@contextlib.contextmanager
def progress(label: str, console, total: int | None = None, every_s: float = LINE_EVERY_S):
    """Yield a counter with ``set_total(n)`` and ``advance(k)`` that shows progress on ``console`` (rich)."""
    if console.is_terminal:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False) as bar:
            yield _Bar(bar, bar.add_task(label, total=total))
        return
    lines = _Lines(label, console, total, every_s)
    yield lines
    lines.show()


def reporter(label: str, console, every_s: float = LINE_EVERY_S):
    """A ``(done, total, *_)`` callback for code that counts its own progress (``haaqinet`` commands).

    On a terminal it rewrites one line about every 2 %; in a log it writes a timed line as
    :func:`progress` does, and one when ``done`` reaches ``total``. The ETA comes from the rate since the
    first call, so a resumed job (``done`` already near ``total`` at its first call) is not shown as
    nearly finished.
    """
    if console.is_terminal:
        state = {"last": -1}

        def show(done: int, total: int, *_):
            step = max(1, total // 50)
            if done // step != state["last"] or done == total:
                state["last"] = done // step
                console.file.write(f"\r{label}: {done}/{total}" + ("\n" if done == total else ""))
                console.file.flush()
        return show
    lines = _Lines(label, console, None, every_s)

    def log(done: int, total: int, *_):
        lines.set_total(total)
        if lines.base is None:             # work done before this run does not count towards the rate
            lines.base, lines.base_time = done, time.monotonic()
            lines.done = done
        if done == total:                  # the closing line, written once
            lines.done = done
            lines.show()
        else:
            lines.advance(done - lines.done)
    return log


class _Bar:
    def __init__(self, bar, task):
        self._bar, self._task = bar, task

    def set_total(self, total: int) -> None:
        self._bar.update(self._task, total=total)

    def advance(self, k: int = 1) -> None:
        self._bar.advance(self._task, k)


class _Lines:
    def __init__(self, label: str, console, total: int | None, every_s: float):
        self.label, self.console, self.total, self.every_s = label, console, total, every_s
        self.done = 0
        self.start = self.last = time.monotonic()
        self.base, self.base_time = None, self.start    # the count and time the rate is measured from

    def set_total(self, total: int) -> None:
        self.total = total

    def advance(self, k: int = 1) -> None:
        self.done += k
        if time.monotonic() - self.last >= self.every_s:
            self.show()

    def show(self) -> None:
        now = time.monotonic()
        self.last = now
        elapsed = now - self.start
        if not self.total:
            self.console.print(f"{self.label} {self.done}, {_clock(elapsed)} elapsed")
            return
        base = self.base or 0
        eta = (f", ETA {_clock((now - self.base_time) * (self.total - self.done) / (self.done - base))}"
               if self.done > base else "")
        self.console.print(f"{self.label} {self.done}/{self.total} ({100 * self.done // self.total} %), "
                           f"{_clock(elapsed)} elapsed{eta}")


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
