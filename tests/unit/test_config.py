"""The scenario config: defaults, files, overrides, validation, and the Flower table."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fedsilo import config
from fedsilo.config import DEFAULTS, FIELDS, ConfigError, Scenario, load, parse_override

ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILES = sorted((ROOT / "configs").glob("*.toml"))


def test_defaults_load():
    s = load(None)
    assert s == Scenario()
    assert s.scenario.name == "bank_hospital"
    assert s.scenario.seed == 42
    assert s.scenario.rounds == 20
    assert s.federation.banks == 3 and s.federation.hospitals == 2
    assert s.data.source == "synthetic"
    assert s.data.synthetic.size == 360
    assert s.train.lr == pytest.approx(0.003)
    assert s.flat() == DEFAULTS
    assert set(DEFAULTS) == set(FIELDS)


def test_configs_dir_is_not_empty():
    names = {p.name for p in CONFIG_FILES}
    assert {"bank_hospital.toml", "smoke.toml"} <= names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_config_file_loads(path):
    s = load(path)
    assert isinstance(s, Scenario)
    raw = config.read_toml(path)
    flat = s.flat()
    for key, value in raw.items():
        assert flat[key] == value, key
    assert s.scenario.name == path.stem


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_config_file_only_overrides_what_it_lists(path):
    raw = config.read_toml(path)
    assert raw, path  # a scenario file lists at least one key
    flat = load(path).flat()
    for key, default in DEFAULTS.items():
        if key not in raw:
            assert flat[key] == default, key


def test_smoke_config_uses_tiny_backbone():
    s = load(ROOT / "configs" / "smoke.toml")
    assert s.scenario.name == "smoke"
    assert s.model.backbone == "tiny"
    assert s.scenario.rounds < DEFAULTS["scenario.rounds"]


def test_unknown_key_names_key_and_suggests_close_match():
    with pytest.raises(ConfigError) as exc:
        load(None, ["train.lrr=0.1"])
    msg = str(exc.value)
    assert "'train.lrr'" in msg
    assert "did you mean 'train.lr'" in msg


def test_unknown_key_in_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[scenario]\nround = 3\n")
    with pytest.raises(ConfigError) as exc:
        load(p)
    assert "'scenario.round'" in str(exc.value)
    assert "did you mean 'scenario.rounds'" in str(exc.value)


def test_unknown_key_without_close_match_has_no_hint():
    with pytest.raises(ConfigError) as exc:
        config.from_flat({"zzzz.qqqq": 1})
    assert "'zzzz.qqqq'" in str(exc.value)
    assert "did you mean" not in str(exc.value)


def test_wrong_type_names_field():
    with pytest.raises(ConfigError) as exc:
        load(None, ['train.lr="abc"'])
    msg = str(exc.value)
    assert "'train.lr'" in msg
    assert "a number" in msg
    assert "'abc'" in msg


def test_wrong_type_bare_string_override():
    with pytest.raises(ConfigError) as exc:
        load(None, ["scenario.rounds=many"])
    assert "'scenario.rounds'" in str(exc.value)
    assert "an integer" in str(exc.value)


def test_wrong_type_in_file(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text('[train]\nbatch_size = "32"\n')
    with pytest.raises(ConfigError) as exc:
        load(p)
    assert "'train.batch_size'" in str(exc.value)


@pytest.mark.parametrize("override, key", [
    ("scenario.rounds=0", "scenario.rounds"),
    ("data.test_fraction=0", "data.test_fraction"),
    ("data.test_fraction=0.95", "data.test_fraction"),
    ("data.alpha=0", "data.alpha"),
    ("train.lr=-0.1", "train.lr"),
    ("data.synthetic.label_noise=0.6", "data.synthetic.label_noise"),
    ("model.max_length=4", "model.max_length"),
    ("strategy.fraction_train=1.5", "strategy.fraction_train"),
])
def test_out_of_range_names_field(override, key):
    with pytest.raises(ConfigError) as exc:
        load(None, [override])
    assert f"'{key}'" in str(exc.value)


def test_range_bounds_inclusive_and_open():
    # closed lower bound: 1 is fine for rounds; open lower bound: 0 is not fine for lr
    assert load(None, ["scenario.rounds=1"]).scenario.rounds == 1
    assert load(None, ["data.test_fraction=0.9"]).data.test_fraction == pytest.approx(0.9)
    assert load(None, ["data.synthetic.label_noise=0"]).data.synthetic.label_noise == 0.0
    with pytest.raises(ConfigError, match=r"'data.test_fraction' must be > 0"):
        load(None, ["data.test_fraction=0"])
    with pytest.raises(ConfigError, match=r"'scenario.rounds' must be >= 1"):
        load(None, ["scenario.rounds=0"])


def test_choices_enforced():
    with pytest.raises(ConfigError) as exc:
        load(None, ["model.pooling=max"])
    msg = str(exc.value)
    assert "'model.pooling'" in msg
    assert "'mean'" in msg and "'cls'" in msg
    assert "'max'" in msg
    assert load(None, ["model.pooling=cls"]).model.pooling == "cls"


def test_int_accepted_for_float_field():
    s = load(None, ["train.lr=1"])
    assert s.train.lr == 1.0
    assert isinstance(s.train.lr, float)
    s = config.from_flat({"strategy.round_timeout_s": 60})
    assert s.strategy.round_timeout_s == 60.0
    assert isinstance(s.strategy.round_timeout_s, float)


def test_bool_not_accepted_for_int():
    with pytest.raises(ConfigError) as exc:
        load(None, ["scenario.rounds=true"])
    assert "'scenario.rounds'" in str(exc.value)
    assert "an integer" in str(exc.value)
    with pytest.raises(ConfigError, match="'train.lr'"):
        config.from_flat({"train.lr": True})


def test_int_not_accepted_for_bool():
    with pytest.raises(ConfigError, match="'output.plot' must be a boolean"):
        config.from_flat({"output.plot": 1})


def test_whole_scenario_rules():
    with pytest.raises(ConfigError, match="federation.banks"):
        load(None, ["federation.banks=0", "federation.hospitals=0"])
    with pytest.raises(ConfigError, match="scenario.name"):
        load(None, ["scenario.name=a/b"])


@pytest.mark.parametrize("text, expected", [
    ("scenario.rounds=3", ("scenario.rounds", 3)),
    ("train.lr=0.01", ("train.lr", 0.01)),
    ("train.lr=1e-3", ("train.lr", 0.001)),
    ("model.cache=false", ("model.cache", False)),
    ("output.plot=true", ("output.plot", True)),
    ("model.backbone=tiny", ("model.backbone", "tiny")),
    ('model.backbone="tiny"', ("model.backbone", "tiny")),
    ("data.source=/tmp/x y.csv", ("data.source", "/tmp/x y.csv")),
    (" scenario.seed = 7 ", ("scenario.seed", 7)),
    # a string key given a number-looking value stays a string
    ("scenario.name=2024", ("scenario.name", "2024")),
    ("faults.crash=1", ("faults.crash", "1")),
    ("data.source=1.5", ("data.source", "1.5")),
    # the value may itself contain '='
    ("faults.crash=a=b", ("faults.crash", "a=b")),
])
def test_parse_override(text, expected):
    key, value = parse_override(text)
    assert (key, value) == expected
    assert type(value) is type(expected[1])


def test_parse_override_errors():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("scenario.rounds")
    with pytest.raises(ConfigError, match="did you mean 'scenario.seed'"):
        parse_override("scenario.sed=1")


def test_override_number_looking_name_loads_as_string():
    s = load(None, ["scenario.name=2024"])
    assert s.scenario.name == "2024"


def test_overrides_apply_over_file_and_last_wins():
    s = load(ROOT / "configs" / "smoke.toml", ["scenario.rounds=2", "scenario.rounds=17"])
    assert s.scenario.rounds == 17
    assert s.model.backbone == "tiny"


def test_missing_config_file_named(tmp_path):
    p = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as exc:
        load(p)
    assert str(p) in str(exc.value)
    assert "does not exist" in str(exc.value)


def test_directory_as_config_file_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path)


def test_invalid_toml_named(tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text("[scenario\nrounds = = 3\n")
    with pytest.raises(ConfigError) as exc:
        load(p)
    assert str(p) in str(exc.value)
    assert "not valid TOML" in str(exc.value)


@pytest.mark.parametrize("overrides", [
    [],
    ["scenario.name=x2024", "train.lr=0.5", "model.cache=false", "data.alpha=2",
     "faults.crash=bank-1, hospital-2", "data.synthetic.size=77", "model.pooling=cls",
     "data.source=/some/where/data.parquet", "output.dir=runs/abc"],
])
def test_to_toml_round_trips(tmp_path, overrides):
    original = load(None, overrides)
    text = config.to_toml(original)
    p = tmp_path / "resolved.toml"
    p.write_text(text)
    again = load(p)
    assert again == original
    assert again.flat() == original.flat()
    # every key is written out, with its type
    assert config.read_toml(p) == original.flat()


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_to_toml_round_trips_config_files(tmp_path, path):
    original = load(path)
    p = tmp_path / "resolved.toml"
    p.write_text(config.to_toml(original))
    assert load(p) == original


def test_replace_validates():
    s = Scenario().replace(**{"scenario.rounds": 3})
    assert s.scenario.rounds == 3
    with pytest.raises(ConfigError, match="'scenario.rounds'"):
        Scenario().replace(**{"scenario.rounds": 0})


def test_pyproject_flower_config_equals_defaults():
    from fedsilo import facts

    with (ROOT / "pyproject.toml").open("rb") as fh:
        pyproject = tomllib.load(fh)
    table = pyproject["tool"]["flwr"]["app"]["config"]
    flat = config.flatten(table)
    run = {k: flat.pop(k) for k in list(flat) if k.startswith(facts.PREFIX)}
    assert run == facts.DEFAULTS  # what a launcher passes beside the scenario
    assert flat == DEFAULTS
    # same types too (an int default must not be written as a float, and vice versa)
    for key, value in flat.items():
        assert type(value) is type(DEFAULTS[key]), key
    # and the keys are in the same order as the dataclasses
    assert list(flat) == list(DEFAULTS)


def test_describe_covers_every_key():
    rows = config.describe()
    assert [k for k, _, _ in rows] == list(FIELDS)
    assert all(help_text for _, _, help_text in rows)
    assert dict((k, d) for k, d, _ in rows) == DEFAULTS


@pytest.mark.parametrize(("override", "message"), [
    ("data.test_fraction=nan", "config: 'data.test_fraction' must be a finite number, got nan"),
    ("train.lr=inf", "config: 'train.lr' must be a finite number, got inf"),
    ("scenario.seed=-1", "config: 'scenario.seed' must be >= 0, got -1"),
])
def test_non_finite_and_negative_values_are_refused(override, message):
    with pytest.raises(ConfigError) as err:
        load(None, [override])
    assert str(err.value) == message


def test_a_config_file_that_is_not_utf8_is_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"[scenario]\nname = \"\xff\xfe\"\n")
    with pytest.raises(ConfigError, match=f"config file '{bad}' is not valid TOML"):
        load(bad)


def test_the_default_scenario_file_spells_out_the_defaults():
    assert load(ROOT / "configs" / "bank_hospital.toml") == Scenario()
