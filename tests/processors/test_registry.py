"""The processor registry: names, parameters, config ids and plugin files."""

import textwrap

import numpy as np
import pytest

from benchmark.audiogram import Listener, builtin_audiograms
from benchmark.calibration import Calibration
from benchmark.errors import BenchError
from processors import registry
from processors.base import Presentation, Processor
from processors.camfit_wdrc import CamfitWDRC
from processors.nalr import NALR


def test_builtins_are_listed_and_resolve_to_their_own_name():
    names = registry.available()
    assert names[:4] == ["unprocessed", "nalr", "nalr-agc", "camfit-wdrc"]
    for name in names:
        assert registry.get_class(name).name == name


def test_unknown_name_suggests_the_closest():
    with pytest.raises(BenchError, match=r"unknown processor 'nalrr'.*did you mean 'nalr'"):
        registry.get_class("nalrr")
    with pytest.raises(BenchError, match="did you mean 'camfit-wdrc'"):
        registry.create("camfit-wdr")


def test_string_parameters_are_converted_to_the_field_type():
    proc = registry.create("nalr", {"nfir_taps": "440"})
    assert proc.nfir_taps == 440 and type(proc.nfir_taps) is int
    agc = registry.create("nalr-agc", {"full_scale_db_spl": "95.5", "soft_clip": "false"})
    assert agc.full_scale_db_spl == 95.5 and agc.soft_clip is False
    wdrc = registry.create("camfit-wdrc", {"attack_ms": "5,5,5,5,5,5"})
    assert wdrc.attack_ms == (5.0,) * 6


def test_unknown_parameter_names_the_valid_ones():
    with pytest.raises(BenchError) as err:
        registry.create("nalr", {"nfir": "440"})
    assert "'nfir'" in str(err.value)
    assert "nfir_taps" in str(err.value)  # listed as the valid parameter (and suggested)
    with pytest.raises(BenchError, match="threshold_db_spl"):
        registry.create("camfit-wdrc", {"threshold": "70"})


@pytest.mark.parametrize("name, params", [
    ("nalr", {"nfir_taps": "many"}),        # not an int
    ("nalr", {"nfir_taps": "220.5"}),       # not an int either
    ("nalr", {"nfir_taps": "221"}),         # odd: no whole-sample delay
    ("nalr", {"nfir_taps": 0}),             # too short
    ("nalr", {"nfir_taps": 220.0}),         # a float given as a value, not a string
    ("nalr-agc", {"soft_clip": "maybe"}),
    ("nalr-agc", {"agc_attenuation": "1.5"}),
    ("nalr-agc", {"full_scale_db_spl": "nan"}),
    ("camfit-wdrc", {"attack_ms": "5,5"}),  # one per band needed
    ("camfit-wdrc", {"crossover_frequencies_hz": "1000,500,2000,4000,6000"}),
    ("camfit-wdrc", {"cr_low_db_spl": "90"}),  # above cr_high_db_spl
    ("camfit-wdrc", {"threshold_db_spl": "loud"}),
])
def test_bad_values_raise_bench_error(name, params):
    with pytest.raises(BenchError):
        registry.create(name, params)


def test_config_id_is_stable_and_follows_the_parameters():
    default = registry.create("nalr")
    assert default.config_id == NALR().config_id == registry.create("nalr", {"nfir_taps": "220"}).config_id
    assert default.config_id.startswith("nalr-") and len(default.config_id) == len("nalr-") + 8
    assert registry.create("nalr", {"nfir_taps": "440"}).config_id != default.config_id
    # tuples given as strings are floats, like the defaults: the same values, the same id
    same = registry.create("camfit-wdrc", {"release_ms": "80,80,80,80,100,100"})
    assert same.config_id == CamfitWDRC().config_id
    assert registry.create("camfit-wdrc", {"release_ms": "80,80,80,80,100,90"}).config_id \
        != CamfitWDRC().config_id


def test_label_shows_changed_parameters_only():
    assert registry.create("nalr").label == "nalr"
    assert registry.create("nalr", {"nfir_taps": "440"}).label == "nalr(nfir_taps=440)"


def test_parse_params():
    assert registry.parse_params(
        ["nalr.nfir_taps=440", "camfit-wdrc.threshold_db_spl=70", "nalr-agc.soft_clip=false"],
        ["nalr", "nalr-agc", "camfit-wdrc"],
    ) == {"nalr": {"nfir_taps": "440"}, "camfit-wdrc": {"threshold_db_spl": "70"},
          "nalr-agc": {"soft_clip": "false"}}
    with pytest.raises(BenchError, match="name.key=value"):
        registry.parse_params(["nalr.nfir_taps"], ["nalr"])
    with pytest.raises(BenchError, match="name.key=value"):
        registry.parse_params(["nfir_taps=440"], ["nalr"])
    with pytest.raises(BenchError, match="not in this run"):
        registry.parse_params(["nalr.nfir_taps=440"], ["unprocessed"])


def test_describe_lists_fields_types_and_defaults():
    rows = {field: (typ, default) for field, typ, default in registry.describe("nalr")}
    assert rows == {"nfir_taps": ("int", 220)}
    assert registry.describe("unprocessed") == []


PLUGIN = textwrap.dedent('''
    from dataclasses import dataclass

    import numpy as np

    from processors.base import Processor


    @dataclass(frozen=True)
    class Gain(Processor):
        name = "gain"
        summary = "a fixed gain"

        gain_db: float = 0.0

        def process(self, signal, presentation, *, rng):
            return (signal * 10 ** (self.gain_db / 20)).astype(np.float32)


    class NotAProcessor:
        pass
''')


def test_processor_from_a_file(tmp_path):
    path = tmp_path / "my_gain.py"
    path.write_text(PLUGIN)
    proc = registry.create(f"{path}:Gain", {"gain_db": "6"})
    assert isinstance(proc, Processor) and proc.gain_db == 6.0
    ears = builtin_audiograms()["N1"]
    presentation = Presentation(24000, Listener("x", ears, ears), Calibration(100.0), ("left",))
    x = np.full((1, 100), 0.1, dtype=np.float32)
    y = proc.process(x, presentation, rng=np.random.default_rng(0))
    np.testing.assert_allclose(y, 0.1 * 10 ** (6 / 20), rtol=1e-6)


def test_bad_plugin_files_raise_bench_error(tmp_path):
    path = tmp_path / "my_gain.py"
    path.write_text(PLUGIN)
    with pytest.raises(BenchError, match="no class 'Missing'"):
        registry.get_class(f"{path}:Missing")
    with pytest.raises(BenchError, match="not a processors.base.Processor"):
        registry.get_class(f"{path}:NotAProcessor")
    with pytest.raises(BenchError, match="give the class"):
        registry.get_class(str(path))
    with pytest.raises(BenchError, match="not found"):
        registry.get_class(f"{tmp_path / 'absent.py'}:Gain")


def test_a_crashing_plugin_import_raises_bench_error(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("import numpy\nraise RuntimeError('plugin exploded')\n")
    with pytest.raises(BenchError, match="cannot import processor file.*plugin exploded"):
        registry.get_class(f"{path}:Anything")
    syntax = tmp_path / "syntax.py"
    syntax.write_text("def broken(:\n")
    with pytest.raises(BenchError, match="SyntaxError"):
        registry.create(f"{syntax}:Anything")
