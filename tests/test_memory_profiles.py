"""Profiles: every built-in validates and is monotone; bad files give one clear error
(field named, exit 2 from the CLI); the loader never shows a traceback (hypothesis fuzz)."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memory_models
from memory_models import FlipRates, UserInputError, list_profiles, load_profile
from memory_models.profile import parse_profile, profile_from_dict
from simulator.cli import main

GOOD = """
name = "test-prof"
technology = "sram"
description = "test"
sources = ["none"]

[knob]
name = "voltage"
unit = "V"
nominal = 1.0
min = 0.5
max = 1.0
harsher = "lower"

[p01]
form = "table"
knob = [0.5, 0.75, 1.0]
p = [1e-2, 1e-4, 0.0]
provenance = "measured"

[p10]
form = "erfc"
scale = 0.5
mu = 0.6
sigma = 0.05
provenance = "fitted"

[sa0]
form = "constant"
value = 1e-5

[persistence]
fraction = 0.5

[spatial]
mode = "column"
weak_fraction = 0.1
weak_share = 0.5

[organization]
word_bits = 32
rows = 64
columns = 32

[energy]
form = "power"
exponent = 2.0
"""


@pytest.mark.parametrize("name", list_profiles())
def test_builtin_profile_is_valid_and_monotone(name):
    prof = load_profile(name)
    assert prof.name == name
    assert prof.sources and all(s.strip() for s in prof.sources)
    k = prof.knob
    assert k.min <= k.nominal <= k.max and k.harsher in ("lower", "higher")
    xs = np.linspace(k.min, k.max, 301)
    if k.harsher == "lower":
        xs = xs[::-1]  # from mild to harsh
    for cname, curve in prof.curves:
        v = curve(xs)
        assert np.all((v >= 0) & (v <= 1)), cname
        if curve.monotone:
            assert np.all(np.diff(v) >= -1e-15 * np.abs(v[1:]).max(initial=1.0)), cname
    r = prof.rates(k.nominal)
    assert isinstance(r, FlipRates)
    harsh = prof.rates(xs[-1])
    assert harsh.ber >= r.ber
    e = prof.energy(k.nominal)
    assert e is None or math.isclose(e, 1.0)
    json.dumps(prof.to_dict())
    assert len(prof.digest) == 64
    assert load_profile(name).digest == prof.digest


def test_registry_is_the_files_on_disk():
    folder = Path(memory_models.__file__).parent / "builtin"
    assert list_profiles() == sorted(p.stem for p in folder.glob("*.toml"))
    assert {"sram-14nm", "sram-14nm-column", "sram-dpcs", "bram-kc705", "bram-vc707",
            "dram-voltage-a", "dram-voltage-b", "dram-voltage-c", "dram-refresh-20c",
            "dram-refresh-70c", "rram", "fefet-domains"} <= set(list_profiles())


def test_illustrative_profiles_say_so():
    assert load_profile("rram").illustrative
    assert load_profile("fefet-temperature").illustrative
    assert not load_profile("sram-14nm").illustrative
    assert "spatial" in load_profile("sram-14nm-column").illustrative_parts()


def test_sram_14nm_fit_matches_measured_points():
    prof = load_profile("sram-14nm")
    d = dict(prof.data)
    for x, ber in zip(d["knob"], d["ber"]):
        assert 0.85 < prof.rates(x).ber / ber < 1.15
    r = prof.rates(0.85)
    assert math.isclose(r.p01 / (r.p01 + r.p10), 0.451, rel_tol=1e-3)
    assert prof.persistent_fraction == 0.45
    assert math.isclose(prof.energy(0.9), 0.81)


def test_polarity_rates_are_array_averages():
    prof = load_profile("dram-refresh-70c")
    c, r = prof.cell_rates(2048), prof.rates(2048)
    assert math.isclose(r.p10, c.p10 / 2) and math.isclose(r.p01, c.p01 / 2)
    true_only = load_profile("dram-refresh-70c-true").rates(2048)
    assert true_only.p01 == 0 and true_only.p10 > 0


def test_flip_rates_ber():
    r = FlipRates(p01=0.01, p10=0.03)
    assert math.isclose(r.ber, 0.02)
    s = FlipRates(p01=0.0, p10=0.0, sa0=0.1, sa1=0.3)
    assert math.isclose(s.ber, 0.2)  # a stuck cell is wrong for half of the stored values
    assert math.isclose(FlipRates(0.1, 0.1, 0.2, 0.2).read01, 0.2 + 0.6 * 0.1)


def test_good_file_parses(tmp_path):
    prof = parse_profile(GOOD, "good.toml")
    assert prof.rates(1.0).p01 == 0.0
    assert math.isclose(prof.rates(0.75).p01, 1e-4)
    assert math.isclose(prof.rates(0.625).p01, 1e-3)  # log-linear: geometric mean
    assert math.isclose(prof.rates(0.875).p01, 0.5e-4)  # zero end point: linear
    assert prof.spatial.mode == "column" and prof.spatial.multipliers() == (5.0, 0.5 / 0.9)
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    assert load_profile(path).digest == prof.digest
    # the digest is the content, not the formatting
    assert parse_profile(GOOD.replace("1e-2", "0.01"), "x").digest == prof.digest


def test_knob_outside_range_unless_clamped():
    prof = parse_profile(GOOD, "good.toml")
    with pytest.raises(UserInputError) as err:
        prof.rates(0.4)
    assert "outside" in err.value.problem and err.value.field == "voltage"
    assert prof.rates(0.4, clamp=True) == prof.rates(0.5)
    with pytest.raises(UserInputError):
        prof.rates(float("nan"))


BAD = [
    # (edit, expected field, words in the message)
    (("p = [1e-2, 1e-4, 0.0]", "p = [1.5, 1e-4, 0.0]"), "p01.p[0]", "outside [0, 1]"),
    (("p = [1e-2, 1e-4, 0.0]", "p = [nan, 1e-4, 0.0]"), "p01.p[0]", "not a finite"),
    (("p = [1e-2, 1e-4, 0.0]", "p = [1e-4, 1e-2, 0.0]"), "p01.p", "not monotone"),
    (("mu = 0.6", "mu = 0.6\nsigmaa = 1"), "p10.sigmaa", "did you mean 'sigma'"),
    (("nominal = 1.0", "nominall = 1.0"), "knob.nominal", "rename 'nominall' to 'nominal'"),
    (('harsher = "lower"', 'harsher = "lowr"'), "knob.harsher", "did you mean 'lower'"),
    (("fraction = 0.5", "fraction = -0.1"), "persistence.fraction", "outside"),
    (("min = 0.5", "min = 1.5"), "knob.min", "must be <"),
    (('form = "erfc"', 'form = "erfcc"'), "p10.form", "did you mean 'erfc'"),
    (("knob = [0.5, 0.75, 1.0]", "knob = [0.6, 0.75, 1.0]"), "p01.knob", "covers"),
    (("sigma = 0.05", "sigma = -0.05"), "p10.sigma", "> 0"),
    (("scale = 0.5", "scale = 1.9"), "p10", "leaves [0, 1]"),
    (('mode = "column"', 'mode = "colum"'), "spatial.mode", "did you mean 'column'"),
    (("weak_share = 0.5", "weak_share = 0.01"), "spatial.weak_share", "weak_share"),
    (('[sa0]\nform = "constant"\nvalue = 1e-5', ""), None, None),  # removing sa0 is fine
    (('description = "test"', ""), "description", "missing"),
    (('sources = ["none"]', "sources = []"), "sources", "no source"),
    (("word_bits = 32", "word_bits = 0"), "organization.word_bits", "out of range"),
    (("word_bits = 32", 'word_bits = "32"'), "organization.word_bits", "integer"),
    (("[energy]", "[energyy]"), "energyy", "did you mean 'energy'"),
    (("value = 1e-5", "value = 2"), "sa0.value", "outside"),
    (("name = \"test-prof\"", "name = \"test prof\""), "name", "invalid profile name"),
]


@pytest.mark.parametrize(("edit", "field", "words"), BAD)
def test_bad_profile_names_the_field(edit, field, words):
    assert edit[0] in GOOD
    text = GOOD.replace(edit[0], edit[1], 1)
    if field is None:
        parse_profile(text, "bad.toml")
        return
    with pytest.raises(UserInputError) as err:
        parse_profile(text, "bad.toml")
    assert err.value.field == field, err.value.line()
    assert words in err.value.line()
    assert err.value.source == "bad.toml" and err.value.fix


def test_invalid_toml_syntax():
    with pytest.raises(UserInputError, match="invalid TOML"):
        parse_profile("name = ", "x.toml")


def test_unknown_builtin_suggests_name():
    with pytest.raises(UserInputError, match="did you mean 'sram-14nm'"):
        load_profile("sram-14mn")
    with pytest.raises(UserInputError, match="file not found"):
        load_profile("/no/such/profile.toml")


@pytest.mark.parametrize(("edit", "field", "words"), [b for b in BAD if b[1]][:6])
def test_cli_validate_exits_2_naming_the_field(tmp_path, capsys, edit, field, words):
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace(edit[0], edit[1], 1))
    assert main(["profiles", "validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert str(path) in err[0] and f"field '{field}'" in err[0] and words in err[0]


def test_cli_validate_good_file(tmp_path, capsys):
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    assert main(["profiles", "validate", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["name"] == "test-prof"


def test_cli_list_and_show(capsys):
    assert main(["profiles", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list_profiles()
    assert main(["profiles", "show", "sram-14nm", "--at", "0.85", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["name"] == "sram-14nm" and len(d["rates"]) == 1
    assert math.isclose(d["rates"][0]["ber"], load_profile("sram-14nm").rates(0.85).ber)
    assert main(["profiles", "show", "rram"]) == 0
    assert "ILLUSTRATIVE" in capsys.readouterr().out
    assert main(["profiles", "show", "sram-14nm", "--at", "0.2"]) == 2
    assert "outside" in capsys.readouterr().err
    assert main(["profiles", "show", "sram-14nm", "--at", "0.2", "--clamp", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rates"][0]["knob"] == 0.7


def test_cli_plot(tmp_path, capsys):
    out = tmp_path / "plots"
    assert main(["profiles", "plot", "sram-14nm", "dram-refresh-70c", "--out", str(out),
                 "--json"]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert len(files) == 2
    for f in files:
        assert Path(f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- fuzzing the loader

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
_values = st.recursive(_scalars.filter(lambda v: v is not None),
                       lambda c: st.one_of(st.lists(c, max_size=4),
                                           st.dictionaries(st.text(max_size=6), c, max_size=4)),
                       max_leaves=8)
_GOOD_DICT = tomllib.loads(GOOD)
_PATHS = [(k,) for k in _GOOD_DICT] + [
    (k, s) for k, v in _GOOD_DICT.items() if isinstance(v, dict) for s in v]


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(_PATHS), value=_values, drop=st.booleans())
def test_fuzz_structure_only_user_errors(path, value, drop):
    import copy

    data = copy.deepcopy(_GOOD_DICT)
    node = data
    for key in path[:-1]:
        node = node[key]
    if drop:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    try:
        prof = profile_from_dict(data, "fuzz.toml")
    except UserInputError as err:
        assert err.line().startswith("fuzz.toml")
        return
    xs = np.linspace(prof.knob.min, prof.knob.max, 5)
    for x in xs:
        r = prof.rates(float(x))
        assert 0 <= r.p01 <= 1 and 0 <= r.p10 <= 1


@settings(max_examples=200, deadline=None, derandomize=True)
@given(text=st.text(max_size=200))
def test_fuzz_text_only_user_errors(text):
    try:
        parse_profile(text, "fuzz.toml")
    except UserInputError:
        pass


@settings(max_examples=150, deadline=None, derandomize=True)
@given(cut=st.integers(0, len(GOOD)), junk=st.text(max_size=12))
def test_fuzz_edited_file_only_user_errors(cut, junk):
    try:
        parse_profile(GOOD[:cut] + junk + GOOD[cut:], "fuzz.toml")
    except UserInputError:
        pass
