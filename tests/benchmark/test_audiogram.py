import json

import pytest

from benchmark.audiogram import (Audiogram, builtin_audiograms, load_listeners_json,
                                 parse_audiogram, severity_of)
from benchmark.errors import BenchError
from benchmark.options import parse_audiogram_list


def test_bisgaard_values_and_8k_extrapolation():
    n3 = builtin_audiograms()["N3"]
    assert n3.at([250, 1000, 4000, 6000]).tolist() == [35, 40, 60, 65]
    assert n3.at([8000]).tolist() == [65]  # flat beyond 6 kHz


def test_all_builtins_present():
    names = set(builtin_audiograms())
    assert {"NH", "N1", "N7", "S1", "S3", "mild", "moderate", "moderate-severe"} <= names


def test_interpolation_is_linear_in_log_frequency():
    a = Audiogram((0, 40), (1000, 4000))
    assert a.at([2000])[0] == pytest.approx(20.0)


def test_parse_values_with_any_separator():
    for text in ("10,20,30,40,50,60,70,80", "10 20 30 40 50 60 70 80", "10;20;30;40;50;60;70;80"):
        a = parse_audiogram(text)
        assert a.levels_db_hl == (10, 20, 30, 40, 50, 60, 70, 80)


@pytest.mark.parametrize("bad", ["N9", "10,20,30", "10,20,x,40,50,60,70,80", "10,20,30,40,50,60,70,200"])
def test_bad_audiogram_is_a_clear_error(bad):
    with pytest.raises(BenchError):
        parse_audiogram(bad)


def test_did_you_mean_for_names():
    with pytest.raises(BenchError, match="did you mean 'N3'"):
        parse_audiogram("N33")


def test_audiogram_list_groups_values_in_eights():
    specs = parse_audiogram_list("N3,10,20,30,40,50,60,60,60,S2")
    assert specs == ["N3", "10,20,30,40,50,60,60,60", "S2"]
    with pytest.raises(BenchError):
        parse_audiogram_list("N3,10,20")


def test_severity_grades():
    assert severity_of(10) == "normal"
    assert severity_of(30) == "mild"
    assert severity_of(45) == "moderate"
    assert builtin_audiograms()["N6"].severity == "profound"


def test_listeners_json_loads_both_ears(tmp_path):
    data = {"L0001": {"name": "L0001", "audiogram_cfs": [250, 500, 1000, 2000, 3000, 4000, 6000, 8000],
                      "audiogram_levels_l": [10, 10, 20, 30, 40, 50, 60, 60],
                      "audiogram_levels_r": [20, 20, 30, 40, 50, 60, 70, 70]}}
    path = tmp_path / "listeners.json"
    path.write_text(json.dumps(data))
    (listener,) = load_listeners_json(path)
    assert listener.left.levels_db_hl[0] == 10 and listener.right.levels_db_hl[0] == 20
    assert listener.ear("right").name == "L0001-right"


@pytest.mark.parametrize("content", ["not json", "[]", '{"L1": {"name": "L1"}}',
                                     '{"L1": {"audiogram_cfs": [250, 500], "audiogram_levels_l": [1], "audiogram_levels_r": [1, 2]}}'])
def test_bad_listeners_json(tmp_path, content):
    path = tmp_path / "listeners.json"
    path.write_text(content)
    with pytest.raises(BenchError):
        load_listeners_json(path)


def test_missing_listeners_json(tmp_path):
    with pytest.raises(BenchError, match="not found"):
        load_listeners_json(tmp_path / "nope.json")
