"""Progress in a log (not a terminal): timed plain lines, and always a last one."""

import io

from rich.console import Console

from benchmark import progress


def _log():
    out = io.StringIO()
    return out, Console(file=out, force_terminal=False, width=200)


def test_lines_in_a_log_show_count_share_and_eta():
    out, console = _log()
    with progress.progress("trials", console, every_s=0.0) as counter:
        counter.set_total(4)
        counter.advance(1)
        counter.advance(1)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("trials 1/4 (25 %), 0:00 elapsed, ETA 0:00")
    assert lines[1].startswith("trials 2/4 (50 %)")
    assert lines[-1].startswith("trials 2/4 (50 %)")        # the closing line, where the work stopped


def test_lines_are_timed_and_the_last_one_is_always_written():
    out, console = _log()
    with progress.progress("pairs", console, total=1000) as counter:   # every 30 s: none during a fast loop
        for _ in range(1000):
            counter.advance()
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[0]]
    assert out.getvalue().startswith("pairs 1000/1000 (100 %), 0:00 elapsed, ETA 0:00")


def test_unknown_total_and_long_clock():
    out, console = _log()
    with progress.progress("items", console) as counter:
        counter.advance(3)
    assert out.getvalue().startswith("items 3, 0:00 elapsed")
    assert progress._clock(3725) == "1:02:05" and progress._clock(59.6) == "1:00"


def test_reporter_for_counting_code_writes_timed_lines_and_the_end():
    out, console = _log()
    show = progress.reporter("labelled items", console)          # every 30 s: only the end in a fast loop
    for done in range(1, 11):
        show(done, 10)
    assert out.getvalue().splitlines() == ["labelled items 10/10 (100 %), 0:00 elapsed, ETA 0:00"]
    out, console = _log()
    show = progress.reporter("audio read", console, every_s=0.0)
    show(3, 6)
    assert out.getvalue().startswith("audio read 3/6 (50 %)")


def test_reporter_rate_counts_only_this_runs_work(monkeypatch):
    import itertools

    clock = itertools.chain([0.0] * 4, itertools.repeat(10.0))    # the first report at 0 s, the next at 10 s
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    out, console = _log()
    show = progress.reporter("labelled items", console, every_s=0.0)
    show(900, 1000)        # resumed: 900 labelled before this run; no rate yet
    show(950, 1000)        # 50 items in 10 s: 50 left take 10 s more (not 0:01 from 950 in 10 s)
    assert out.getvalue().splitlines() == ["labelled items 900/1000 (90 %), 0:00 elapsed",
                                           "labelled items 950/1000 (95 %), 0:10 elapsed, ETA 0:10"]
