"""Processor chains: ``registry.create("a>b>c", params)`` -> :class:`processors.chain.Chain`."""

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from benchmark.audiogram import Listener, builtin_audiograms
from benchmark.calibration import calibrate
from benchmark.errors import AudioError, BenchError
from processors import registry
from processors.base import Presentation, Processor
from processors.camfit_wdrc import CamfitWDRC
from processors.chain import Chain, split_stages, stage_keys_of, stage_rngs
from processors.nalr import NALR
from processors.spectral_gating import SpectralGating

AUDIOGRAMS = builtin_audiograms()
SPEC = "spectral-gating>nalr>camfit-wdrc"

DITHER = textwrap.dedent('''
    from dataclasses import dataclass

    import numpy as np

    from processors.base import Processor


    @dataclass(frozen=True)
    class Dither(Processor):
        """Adds rng noise: shows which generator a stage received."""
        name = "dither"
        summary = "adds noise from rng"

        level: float = 1e-3

        def process(self, signal, presentation, *, rng):
            return (signal + self.level * rng.standard_normal(signal.shape)).astype(np.float32)


    @dataclass(frozen=True)
    class Broken(Processor):
        name = "broken"
        summary = "returns the wrong shape"

        def process(self, signal, presentation, *, rng):
            return signal[:, :-1]
''')


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    path = tmp_path_factory.mktemp("plugins") / "dither.py"
    path.write_text(DITHER)
    return str(path)


@pytest.fixture(scope="module")
def signal_and_presentation():
    rate = 24000
    rng = np.random.default_rng(0)
    t = np.arange(rate // 2) / rate
    x = np.stack([np.sin(2 * np.pi * 440 * t), 0.7 * np.sin(2 * np.pi * 660 * t)])
    x = (0.05 * x + 0.005 * rng.standard_normal(x.shape)).astype(np.float32)
    listener = Listener("N2-S2", AUDIOGRAMS["N2"], AUDIOGRAMS["S2"])
    return x, Presentation(rate, listener, calibrate(x, 65.0), ("left", "right"))


# -- parsing ---------------------------------------------------------------------------------
def test_create_parses_a_chain_into_its_stages():
    chain = registry.create(SPEC)
    assert isinstance(chain, Chain) and isinstance(chain, Processor)
    assert [type(s) for s in chain.stages] == [SpectralGating, NALR, CamfitWDRC]
    assert chain.name == SPEC and chain.stage_names == ["spectral-gating", "nalr", "camfit-wdrc"]
    assert registry.create(" spectral-gating > nalr >camfit-wdrc ") == chain  # spaces are fine
    assert registry.get_class(SPEC) is Chain


def test_split_and_stage_keys():
    assert split_stages("a>b > c") == ["a", "b", "c"]
    assert stage_keys_of(["nalr", "x", "nalr"]) == ["nalr#1", "x", "nalr#2"]


@pytest.mark.parametrize("spec, match", [
    ("nalr>>camfit-wdrc", "stage 2 of 3 is empty"),
    ("nalr>", "stage 2 of 2 is empty"),
    (">nalr", "stage 1 of 2 is empty"),
    ("nalr> >camfit-wdrc", "stage 2 of 3 is empty"),
    ("nalrr>camfit-wdrc", r"unknown processor 'nalrr'.*did you mean 'nalr'"),
    ("nalr>camfit-wdr", "did you mean 'camfit-wdrc'"),
])
def test_bad_chains_raise_bench_error(spec, match):
    with pytest.raises(BenchError, match=match):
        registry.create(spec)


def test_chain_needs_two_processor_stages():
    with pytest.raises(BenchError, match="at least two"):
        Chain((NALR(),))
    with pytest.raises(BenchError, match="cannot contain a chain"):
        Chain((NALR(), Chain((NALR(), NALR()))))
    with pytest.raises(BenchError, match="not a processors.base.Processor"):
        Chain((NALR(), "nalr"))


# -- parameters per stage ---------------------------------------------------------------------
def test_parameters_go_to_their_stage():
    chain = registry.create(SPEC, {"nalr.nfir_taps": "440", "spectral-gating.prop_decrease": "0.5"})
    assert chain.stages[0] == SpectralGating(prop_decrease=0.5)
    assert chain.stages[1] == NALR(nfir_taps=440)
    assert chain.stages[2] == CamfitWDRC()


def test_a_repeated_stage_is_addressed_by_occurrence():
    chain = registry.create("nalr>nalr", {"nalr#2.nfir_taps": "440"})
    assert chain.stages == (NALR(), NALR(nfir_taps=440))
    assert chain.stage_keys == ["nalr#1", "nalr#2"]
    with pytest.raises(BenchError, match=r"occurs 2 times; say which with nalr#1.nfir_taps"):
        registry.create("nalr>nalr", {"nalr.nfir_taps": "440"})


@pytest.mark.parametrize("params, match", [
    ({"nfir_taps": "440"}, "must name its stage"),
    ({"nalrr.nfir_taps": "440"}, r"has no stage 'nalrr'.*did you mean 'nalr'"),
    ({"nalr.nfir": "440"}, r"processor 'nalr' has no parameter 'nfir'"),
    ({"nalr.nfir_taps": "221"}, "must be even"),
])
def test_bad_stage_parameters_raise_bench_error(params, match):
    with pytest.raises(BenchError, match=match):
        registry.create(SPEC, params)


def test_parse_params_routes_to_chains():
    names = ["spectral-gating>nalr", "mmse-stsa>nalr", "nalr-agc"]
    # the chain and the stage given: only that chain
    assert registry.parse_params(["spectral-gating>nalr.nalr.nfir_taps=440"], names) == {
        "spectral-gating>nalr": {"nalr.nfir_taps": "440"}}
    # only the stage: every chain that has it
    assert registry.parse_params(["nalr.nfir_taps=440", "nalr-agc.soft_clip=false"], names) == {
        "spectral-gating>nalr": {"nalr.nfir_taps": "440"},
        "mmse-stsa>nalr": {"nalr.nfir_taps": "440"},
        "nalr-agc": {"soft_clip": "false"}}
    # a processor of the run with that name takes it alone
    assert registry.parse_params(["nalr.nfir_taps=440"], ["nalr", "spectral-gating>nalr"]) == {
        "nalr": {"nfir_taps": "440"}}
    assert registry.parse_params(["nalr#2.nfir_taps=440"], ["nalr>nalr"]) == {
        "nalr>nalr": {"nalr#2.nfir_taps": "440"}}
    with pytest.raises(BenchError, match="occurs 2 times"):
        registry.parse_params(["nalr.nfir_taps=440"], ["nalr>nalr"])
    with pytest.raises(BenchError, match=r"not in this run.*did you mean 'nalr'"):
        registry.parse_params(["nalrr.nfir_taps=440"], names)


def test_command_line_options_and_the_sweep_spec_build_chains():
    from benchmark.options import parse_processors
    from benchmark.sweep import ProcessorSpec

    specs = parse_processors(f"{SPEC},nalr", ["nalr.nfir_taps=440", "camfit-wdrc.knee_width_db=5"])
    assert [s.name for s in specs] == [SPEC, "nalr"]
    chain = specs[0].create()
    assert chain.stages[1] == NALR()  # "nalr.*" went to the standalone nalr of the run
    assert chain.stages[2] == CamfitWDRC(knee_width_db=5.0)
    assert specs[1].create() == NALR(nfir_taps=440)
    assert ProcessorSpec(SPEC, (("nalr.nfir_taps", "440"),)).create().stages[1] == NALR(nfir_taps=440)


def test_describe_lists_stage_parameters():
    rows = registry.describe("nalr>nalr-agc")
    assert rows[0] == ("nalr.nfir_taps", "int", 220)
    assert ("nalr-agc.soft_clip", "bool", True) in rows


# -- identity ---------------------------------------------------------------------------------
def test_config_id_is_stable_and_follows_the_stages():
    chain = registry.create(SPEC)
    assert chain.config_id == registry.create(SPEC).config_id
    assert chain.config_id.startswith(SPEC + "-") and len(chain.config_id) == len(SPEC) + 9
    assert chain.config_id == Chain((SpectralGating(), NALR(), CamfitWDRC())).config_id
    changed = registry.create(SPEC, {"nalr.nfir_taps": "440"})
    assert changed.config_id != chain.config_id
    assert registry.create("nalr>spectral-gating").config_id != registry.create(
        "spectral-gating>nalr").config_id
    # no stage's id collides with the chain's
    assert chain.config_id not in {s.config_id for s in chain.stages}


def test_config_id_is_the_same_in_another_process():
    code = ("from processors import registry; "
            f"print(registry.create({SPEC!r}, {{'nalr.nfir_taps': '440'}}).config_id)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == registry.create(SPEC, {"nalr.nfir_taps": "440"}).config_id


def test_label_and_params():
    chain = registry.create(SPEC, {"nalr.nfir_taps": "440"})
    assert chain.label == "spectral-gating>nalr(nfir_taps=440)>camfit-wdrc"
    assert registry.create("nalr>camfit-wdrc").label == "nalr>camfit-wdrc"
    params = chain.params()
    assert [s["name"] for s in params["stages"]] == ["spectral-gating", "nalr", "camfit-wdrc"]
    assert params["stages"][1]["params"] == {"nfir_taps": 440}


def test_chain_pickles_and_is_frozen():
    chain = registry.create(SPEC, {"nalr.nfir_taps": "440"})
    again = pickle.loads(pickle.dumps(chain))
    assert again == chain and again.config_id == chain.config_id and again.label == chain.label
    with pytest.raises(AttributeError):
        chain.stages = ()


# -- processing ---------------------------------------------------------------------------------
def test_chain_equals_running_the_stages_by_hand(signal_and_presentation):
    x, presentation = signal_and_presentation
    chain = registry.create(SPEC)
    y = chain.process(x, presentation, rng=np.random.default_rng(42))
    rngs = stage_rngs(np.random.default_rng(42), 3)
    by_hand = x
    for stage, rng in zip(chain.stages, rngs):
        by_hand = stage.process(by_hand, presentation, rng=rng)
    np.testing.assert_array_equal(y, by_hand)
    assert y.dtype == np.float32 and y.shape == x.shape


def test_chain_is_deterministic_and_gives_each_stage_its_own_rng(plugin, signal_and_presentation):
    x, presentation = signal_and_presentation
    chain = registry.create(f"{plugin}:Dither>nalr>{plugin}:Dither")
    assert chain.name == "dither>nalr>dither" and chain.stage_keys == ["dither#1", "nalr", "dither#2"]
    y1 = chain.process(x, presentation, rng=np.random.default_rng(7))
    y2 = chain.process(x, presentation, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(y1, chain.process(x, presentation, rng=np.random.default_rng(8)))
    # the two dither stages draw different noise: their seeds differ
    r1, _, r3 = stage_rngs(np.random.default_rng(7), 3)
    assert not np.array_equal(r1.standard_normal(8), r3.standard_normal(8))
    # file-plugin stages take parameters under the token as written in the spec
    quiet = registry.create(f"{plugin}:Dither>nalr", {f"{plugin}:Dither.level": "0"})
    np.testing.assert_allclose(quiet.process(x, presentation, rng=np.random.default_rng(7)),
                               NALR().process(x, presentation, rng=np.random.default_rng(0)))


def test_input_is_untouched_and_not_returned(signal_and_presentation):
    x, presentation = signal_and_presentation
    before = x.copy()
    y = registry.create("unprocessed>unprocessed").process(x, presentation, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(y, x)
    assert y is not x


def test_a_broken_stage_is_named(plugin, signal_and_presentation):
    x, presentation = signal_and_presentation
    chain = registry.create(f"nalr>{plugin}:Broken")
    with pytest.raises(AudioError, match=r"stage 2 \(broken\).*shape"):
        chain.process(x, presentation, rng=np.random.default_rng(0))


def test_bench_ls_processors_still_lists_everything():
    from benchmark.listing import render

    text = render("processors")
    for name in registry.available():
        assert text.count(f"\n{name} ") + text.startswith(f"{name} ") >= 1, name
    assert "--param freq-lowering.cutoff_hz=2000.0" in text
