"""Faults: nothing is lost, nothing is written twice, and a bad job never stops a sweep.

Executors under test: serial, the local pool and Dask (a LocalCluster on
127.0.0.1 only). Faults: a worker killed mid-sweep, the client killed
mid-sweep, a plugin that hangs, raises or leaks memory, and a results folder
that cannot be written. Every sweep runs through :func:`benchmark.runner.run_sweep`.
"""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from benchmark import options
from benchmark.errors import BenchError
from benchmark.executors import LocalExecutor, make_executor
from benchmark.runner import run_sweep
from benchmark.sweep import ProcessorSpec, SweepConfig
from benchmark.trial import SCORE_COLUMNS

pytest.importorskip("distributed")
from benchmark.dask_executor import DaskExecutor  # noqa: E402


def _pick_backend() -> str:
    """The fast HAAQI if it imports and scores a short tone (about 3x quicker), else pyclarity."""
    if os.environ.get("HAAQI_BENCH_TEST_BACKEND"):
        return os.environ["HAAQI_BENCH_TEST_BACKEND"]
    try:
        import numpy as np

        from benchmark import haaqi
        from benchmark.audiogram import parse_audiogram

        tone = 0.1 * np.sin(2 * np.pi * 440 * np.arange(6000) / 24000)
        haaqi.score(tone, 0.9 * tone, sample_rate_hz=24000, audiogram=parse_audiogram("N2"),
                    level1_db_spl=100.0, equalisation=1, seed=0, backend="fast")
    except Exception:  # not installed, or a broken build: use the reference
        return "pyclarity"
    return "fast"


BACKEND = _pick_backend()
TIMEOUT_S = 5.0  # a good job here (two 1-s scores) takes about 1 s of CPU

PLUGIN = '''
import os
import signal
import time
from dataclasses import dataclass

import numpy as np

from processors.base import Processor


@dataclass(frozen=True)
class KillOnce(Processor):
    """SIGKILLs its own process the first time any copy of it runs (marker file)."""
    name = "kill-once"
    marker: str = ""

    def process(self, x, presentation, *, rng):
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return x
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)


def _chosen(processor, presentation) -> bool:
    """Misbehave only for the listener named in the parameter (every listener if none)."""
    return not processor.listener or presentation.listener.name == processor.listener


@dataclass(frozen=True)
class Hang(Processor):
    """Never returns: sleeps, spins, or sleeps with SIGALRM blocked (like a hang in C)."""
    name = "hang"
    mode: str = "sleep"
    listener: str = ""

    def process(self, x, presentation, *, rng):
        if not _chosen(self, presentation):
            return x
        if self.mode == "masked":
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        while self.mode == "busy":
            pass
        time.sleep(1000)
        return x


@dataclass(frozen=True)
class Raise(Processor):
    name = "raise"

    def process(self, x, presentation, *, rng):
        raise RuntimeError("kaboom")


_LEAKED = []  # a real leak: it outlives the job


@dataclass(frozen=True)
class Leak(Processor):
    """Keeps allocating 200 MB chunks (capped at 4 GB, in case no limit stops it); stopped by a memory
    limit, it fills what is left in 1 MB chunks, so that the worker holds almost nothing back."""
    name = "leak"
    listener: str = ""

    def process(self, x, presentation, *, rng):
        if not _chosen(self, presentation):
            return x
        try:
            for _ in range(20):
                _LEAKED.append(np.ones(25_000_000))
                time.sleep(0.05)
        except MemoryError:
            while True:
                _LEAKED.append(np.ones(125_000))
        raise RuntimeError("the memory limit did not stop the leak")
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plugin") / "faulty.py"
    path.write_text(PLUGIN)
    return path


@pytest.fixture(scope="module")
def scheduler():
    """A 2-worker LocalCluster shared by the Dask tests; yields its address."""
    with DaskExecutor(n_workers=2) as shared:
        yield shared.cluster.scheduler_address


def _config(corpus, processors, *, spls=(65.0,), listeners="N2", limit=None) -> SweepConfig:
    return SweepConfig(processors=tuple(processors), spls_db=tuple(spls),
                       listeners=options.parse_listeners(listeners, None), corpus=str(corpus),
                       excerpt_s=1.0, haaqi_backend=BACKEND, haaqinet_checkpoint=None,
                       limit_clips=limit)


def _spec(plugin, cls, **params) -> ProcessorSpec:
    return ProcessorSpec(f"{plugin}:{cls}", tuple((k, str(v)) for k, v in params.items()))


def _journal_keys(run_dir: Path) -> list[str]:
    lines = (run_dir / "journal.jsonl").read_text().splitlines()
    return [json.loads(line)["trial_key"] for line in lines]


def _check_complete(summary, n_trials: int) -> None:
    """Exactly one journal row and one table row per trial."""
    table = summary.table
    assert len(table) == n_trials and table["trial_key"].is_unique
    keys = _journal_keys(summary.run_dir)
    assert len(keys) == len(set(keys)) == n_trials


def _is(table, plugin_class: str):
    """Rows of the plugin class ``plugin_class``."""
    return table["processor"].str.endswith(f"faulty.py:{plugin_class}")


# -- same results on every executor ----------------------------------------------------
def test_dask_scores_are_bit_identical_to_serial_and_local(tmp_path, audio_folder):
    config = _config(audio_folder, [ProcessorSpec("nalr")], limit=2)
    tables = {}
    for kind, workers in (("serial", 0), ("local", 2), ("dask", 2)):
        executor = make_executor(kind, workers=workers, trial_timeout_s=60)
        summary = run_sweep(config, results_dir=tmp_path, run_id=kind, executor=executor)
        _check_complete(summary, 4)  # 2 clips x 2 ears
        assert (summary.table["status"] == "ok").all()
        tables[kind] = summary.table
    for kind in ("local", "dask"):
        assert tables[kind]["trial_key"].tolist() == tables["serial"]["trial_key"].tolist()
        for col in SCORE_COLUMNS:
            assert tables[kind][col].tolist() == tables["serial"][col].tolist(), (kind, col)
    assert tables["dask"]["worker_pid"].nunique() == 2


# -- a worker dies -------------------------------------------------------------------
def test_dask_worker_killed_mid_sweep_is_retried_elsewhere(tmp_path, audio_folder, plugin,
                                                           scheduler):
    marker = tmp_path / "killed.pid"
    config = _config(audio_folder, [_spec(plugin, "KillOnce", marker=marker)], limit=2)
    summary = run_sweep(config, results_dir=tmp_path, run_id="kill",
                        executor=DaskExecutor(scheduler))
    killed_pid = int(marker.read_text())
    _check_complete(summary, 4)
    assert (summary.table["status"] == "ok").all(), summary.errors
    assert killed_pid not in set(summary.table["worker_pid"])


def test_client_killed_mid_sweep_resumes_without_duplicates(tmp_path, audio_folder, scheduler):
    config = _config(audio_folder, [ProcessorSpec("unprocessed")], spls=(55.0, 75.0))
    (tmp_path / "config.pkl").write_bytes(pickle.dumps(config))
    script = tmp_path / "client.py"
    script.write_text(
        "import pickle, sys\n"
        "from benchmark.dask_executor import DaskExecutor\n"
        "from benchmark.runner import run_sweep\n"
        "if __name__ == '__main__':\n"
        "    config = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "    run_sweep(config, results_dir=sys.argv[2], run_id='k',\n"
        "              executor=DaskExecutor(n_workers=2))\n")
    journal = tmp_path / "r" / "k" / "journal.jsonl"
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "config.pkl"),
                             str(tmp_path / "r")], cwd=Path(__file__).parents[2],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 4:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the client, its scheduler and its workers
    proc.wait()
    n_before = journal.read_text().count("\n")
    assert 4 <= n_before < 12, "the kill must land mid-sweep"
    summary = run_sweep(config, results_dir=tmp_path / "r", run_id="k",
                        executor=DaskExecutor(scheduler))
    assert summary.n_skipped >= n_before - 1  # a torn last line may be redone, never doubled
    _check_complete(summary, 12)  # 3 clips x 2 SPLs x 2 ears
    assert (summary.table["status"] == "ok").all()


# -- a plugin hangs, raises or leaks --------------------------------------------------
# A job is one clip x listener x SPL through every processor, so a job that hangs or kills
# its worker fails all its trials. The plugins misbehave for listener N2 only; the N3 jobs
# must come through untouched.
def _check_failed(table, failed, stage: str, message: str) -> None:
    """Rows where ``failed`` holds are errors of ``stage`` saying ``message``; the rest are ok."""
    bad, good = table[failed], table[~failed]
    assert len(bad) and (bad["status"] == "error").all(), table[["trial_key", "error"]].to_string()
    assert "haaqi" not in bad or bad["haaqi"].isna().all()
    assert (bad["error_stage"] == stage).all(), bad["error"].tolist()
    assert bad["error"].str.contains(message).all(), bad["error"].tolist()
    assert len(good) and (good["status"] == "ok").all(), good["error"].tolist()


def _two_listeners(corpus, plugin_spec) -> SweepConfig:
    """One clip, listeners N2 and N3, one ear: two small jobs."""
    return replace(_config(corpus, [ProcessorSpec("unprocessed"), plugin_spec],
                           listeners="N2,N3", limit=1), ears=("left",))


@pytest.mark.parametrize("mode", ["sleep", "masked"])
def test_local_hang_times_out(tmp_path, audio_folder, plugin, monkeypatch, mode):
    """sleep: the worker's alarm stops it; masked (alarm blocked): the parent kills the worker."""
    monkeypatch.setattr("benchmark.executors.KILL_GRACE_S", 1.0)
    config = _two_listeners(audio_folder, _spec(plugin, "Hang", mode=mode, listener="N2"))
    started = time.perf_counter()
    summary = run_sweep(config, results_dir=tmp_path, run_id=mode,
                        executor=LocalExecutor(2, trial_timeout_s=TIMEOUT_S))
    _check_complete(summary, 4)
    table = summary.table
    _check_failed(table, table["listener"] == "N2", "timeout", "trial timeout of 5 s")
    if mode == "masked":
        assert table[table["listener"] == "N2"]["error"].str.contains("killed").all()
    assert time.perf_counter() - started < 60


def test_dask_hang_times_out_and_worker_is_restarted(tmp_path, audio_folder, plugin, scheduler):
    config = _two_listeners(audio_folder, _spec(plugin, "Hang", mode="busy", listener="N2"))
    executor = DaskExecutor(scheduler, trial_timeout_s=TIMEOUT_S)
    summary = run_sweep(config, results_dir=tmp_path, run_id="hang", executor=executor)
    _check_complete(summary, 4)
    table = summary.table
    _check_failed(table, table["listener"] == "N2", "timeout", "trial timeout of 5 s")
    # the cluster is whole again: a later sweep on it runs
    again = run_sweep(_config(audio_folder, [ProcessorSpec("unprocessed")], limit=1),
                      results_dir=tmp_path, run_id="after", executor=DaskExecutor(scheduler))
    assert again.n_ok == 2


def test_dask_raising_plugin_gives_error_rows(tmp_path, audio_folder, plugin, scheduler):
    config = _config(audio_folder, [ProcessorSpec("unprocessed"), _spec(plugin, "Raise")], limit=2)
    summary = run_sweep(config, results_dir=tmp_path, run_id="raise",
                        executor=DaskExecutor(scheduler))
    _check_complete(summary, 8)
    table = summary.table
    _check_failed(table, _is(table, "Raise"), "process", "RuntimeError: kaboom")


def test_local_leak_hits_the_memory_limit_as_an_error_row(tmp_path, audio_folder, plugin):
    config = _two_listeners(audio_folder, _spec(plugin, "Leak", listener="N2"))
    executor = make_executor("local", workers=1, worker_memory_gb=2.0)
    summary = run_sweep(config, results_dir=tmp_path, run_id="leak", executor=executor)
    _check_complete(summary, 4)
    table = summary.table
    n2 = table["listener"] == "N2"
    leak = table[_is(table, "Leak") & n2]
    assert (leak["status"] == "error").all() and (leak["error_stage"] == "process").all()
    assert leak["error"].str.contains("MemoryError").all(), leak["error"].tolist()
    # the same job's other processor is scored while the leak is held: ok, or out of memory
    same_job = table[~_is(table, "Leak") & n2]
    assert ((same_job["status"] == "ok") | same_job["error"].str.contains("MemoryError")).all()
    # the next job runs in a fresh worker
    assert (table[~n2]["status"] == "ok").all(), table[~n2]["error"].tolist()
    assert table[~n2]["worker_pid"].iloc[0] != leak["worker_pid"].iloc[0]


def test_dask_leak_kills_workers_then_gives_error_rows(tmp_path, audio_folder, plugin):
    config = _two_listeners(audio_folder, _spec(plugin, "Leak", listener="N2"))
    executor = DaskExecutor(n_workers=2, worker_memory_gb=1.5, allowed_failures=1)
    summary = run_sweep(config, results_dir=tmp_path, run_id="leak", executor=executor)
    _check_complete(summary, 4)
    table = summary.table  # the nanny kills the worker: the whole N2 job fails
    _check_failed(table, table["listener"] == "N2", "worker", "2 Dask workers died")


# -- the results folder is unusable: a clear error before any work ------------------------
class _NoWork:
    name = "no-work"

    def run(self, inputs):
        raise AssertionError("no job may run when the results folder is unusable")


def test_results_under_a_regular_file_is_a_clear_error(tmp_path, audio_folder):
    (tmp_path / "file").write_text("not a folder")
    config = _config(audio_folder, [ProcessorSpec("unprocessed")])
    with pytest.raises(BenchError, match="cannot create results folder"):
        run_sweep(config, results_dir=tmp_path / "file" / "results", executor=_NoWork())


def test_full_disk_is_a_clear_error(tmp_path, audio_folder, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(
        100 * 2**30, 100 * 2**30 - 2**20, 2**20))
    config = _config(audio_folder, [ProcessorSpec("unprocessed")])
    with pytest.raises(BenchError, match="only 1 MiB free"):
        run_sweep(config, results_dir=tmp_path / "r", executor=_NoWork())
    assert not (tmp_path / "r" / "journal.jsonl").exists()


# -- the factory --------------------------------------------------------------------
def test_make_executor_kinds_and_clear_errors():
    assert make_executor("local", workers=0).name == "serial"
    assert make_executor("local", workers=3).workers == 3
    assert make_executor("dask", workers=3).n_workers == 3  # nothing started yet
    with pytest.raises(BenchError, match="did you mean 'dask'"):
        make_executor("dusk", workers=1)
    with pytest.raises(BenchError, match="needs --executor dask"):
        make_executor("local", workers=1, scheduler="tcp://127.0.0.1:8786")
    with pytest.raises(BenchError, match="needs worker processes"):
        make_executor("serial", workers=0, worker_memory_gb=2)


def test_cli_and_local_executor_do_not_import_dask():
    code = ("import sys\n"
            "from benchmark.executors import make_executor\n"
            "make_executor('local', workers=2, trial_timeout_s=5)\n"
            "import benchmark.cli\n"
            "bad = [m for m in ('dask', 'distributed', 'torch') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
