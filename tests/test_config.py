"""pneumo.config: shipped recipes, overrides, and loud failures for typos and bad values."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

import pytest
import yaml

from pneumo.config import (
    RULES,
    AugmentConfig,
    Config,
    check_config,
    config_from_dict,
    config_to_dict,
    load_config,
    named_configs,
)
from pneumo.errors import PneumoError

PROJECT = Path(__file__).resolve().parents[1]


def test_named_configs_are_shipped() -> None:
    shipped = named_configs()
    assert {"seed", "default", "cpu"} <= set(shipped)
    assert all(p.is_file() and p.suffix == ".yaml" for p in shipped.values())


@pytest.mark.parametrize("name", ["seed", "default", "cpu"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(name)
    assert isinstance(cfg, Config) and isinstance(cfg.augment, AugmentConfig)
    # every key the file names is taken from the file, not left at the dataclass default
    raw = yaml.safe_load(named_configs()[name].read_text())
    values = config_to_dict(cfg)
    for key, value in raw.items():
        if key == "augment":
            for k, v in value.items():
                assert values["augment"][k] == pytest.approx(float(v)), f"{name}: augment.{k}"
        else:
            assert values[key] == value, f"{name}: {key}"


@pytest.mark.parametrize("name", ["seed", "default", "cpu"])
def test_project_configs_match_shipped(name: str) -> None:
    """configs/ in the repository and the copies inside the package must not drift apart."""
    local = PROJECT / "configs" / f"{name}.yaml"
    assert local.is_file()
    assert load_config(local) == load_config(name)


def test_required_top_level_keys() -> None:
    for name in ("seed", "default", "cpu"):
        values = config_to_dict(load_config(name))
        for key in ("data", "model", "task", "image_size", "batch_size", "epochs", "seed"):
            assert key in values, key
        assert values["task"] in ("binary", "pathogen")


def test_seed_is_the_notebook() -> None:
    cfg = load_config("seed")
    assert cfg.model == "seed_cnn"
    assert cfg.task == "binary"
    assert cfg.image_size == 180
    assert cfg.batch_size == 16
    assert cfg.epochs == 25
    assert cfg.optimizer == "adam"
    assert cfg.lr == pytest.approx(0.001)
    assert cfg.weight_decay == 0.0
    assert cfg.adam_eps == pytest.approx(1e-7)  # Keras's Adam
    assert cfg.split == "image"
    assert cfg.val_fraction == pytest.approx(0.2)
    assert cfg.select == "last"
    assert cfg.threshold == 0.5
    assert cfg.balance == "class_weights"
    assert cfg.schedule == "constant"
    assert cfg.warmup_epochs == 0
    assert cfg.label_smoothing == 0
    assert not cfg.augment.enabled
    assert all(v == 0 for v in dataclasses.asdict(cfg.augment).values())


def test_default_and_cpu_use_patient_split_and_augmentation() -> None:
    for name in ("default", "cpu"):
        cfg = load_config(name)
        assert cfg.split == "patient"
        assert cfg.augment.enabled
        assert cfg.augment.hflip == 0.0  # anatomy is not left-right symmetric


def test_no_source_gives_dataclass_defaults() -> None:
    assert load_config() == Config()


def test_overrides() -> None:
    cfg = load_config("seed", ["epochs=3", "augment.rotate_deg=5", "lr=1e-4", "threshold=youden", "amp=false"])
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    assert cfg.augment.rotate_deg == 5.0 and isinstance(cfg.augment.rotate_deg, float)
    assert cfg.augment.enabled
    assert cfg.lr == pytest.approx(1e-4)
    assert cfg.threshold == "youden"
    assert cfg.amp is False
    # the rest of the recipe is untouched
    assert cfg.model == "seed_cnn" and cfg.image_size == 180 and cfg.batch_size == 16


def test_override_float_from_int_and_int_from_integral_float() -> None:
    cfg = load_config("cpu", ["lr=1", "epochs=4.0"])
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.epochs == 4 and isinstance(cfg.epochs, int)


def test_yaml_file_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("model: resnet18\nepochs: 7\naugment:\n  noise: 0.05\n")
    cfg = load_config(path, ["epochs=2"])
    assert (cfg.model, cfg.epochs, cfg.augment.noise) == ("resnet18", 2, 0.05)
    assert cfg.batch_size == Config().batch_size


# --- errors ---------------------------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


def test_unknown_key_in_file(tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match="unknown config key 'epoch'"):
        load_config(_write(tmp_path, "epoch: 3\n"))


def test_unknown_nested_key_in_file(tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match="unknown config key 'augment.rotate'"):
        load_config(_write(tmp_path, "augment:\n  rotate: 3\n"))


@pytest.mark.parametrize("override", ["epoch=3", "augment.rotation=5", "model.depth=3"])
def test_unknown_key_in_override(override: str) -> None:
    with pytest.raises(PneumoError, match="unknown config key") as err:
        load_config("seed", [override])
    assert override.split("=")[0] in str(err.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("epochs=abc", "epochs"),
        ("epochs=2.5", "epochs"),
        ("batch_size=true", "batch_size"),
        ("amp=1", "amp"),
        ("lr=fast", "lr"),
        ("augment.rotate_deg=lots", "augment.rotate_deg"),
    ],
)
def test_wrong_type(override: str, key: str) -> None:
    with pytest.raises(PneumoError, match=f"'{key}'"):
        load_config("seed", [override])


def test_wrong_type_in_file(tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match=r"'image_size' must be in \[32, 1024\], a whole number"):
        load_config(_write(tmp_path, "image_size: big\n"))


@pytest.mark.parametrize(
    ("override", "key"),
    [("split=foo", "split"), ("optimizer=rmsprop", "optimizer"), ("task=covid", "task"), ("select=first", "select")],
)
def test_bad_choice(override: str, key: str) -> None:
    with pytest.raises(PneumoError, match=f"'{key}' must be one of") as err:
        load_config("seed", [override])
    assert override.split("=")[1] in str(err.value)


@pytest.mark.parametrize(
    "override",
    ["threshold=1.5", "threshold=otsu", "image_size=16", "batch_size=1", "epochs=0", "val_fraction=0", "val_fraction=1"],
)
def test_bad_values(override: str) -> None:
    with pytest.raises(PneumoError, match=override.split("=")[0]):
        load_config("seed", [override])


@pytest.mark.parametrize("override", ["epochs", "=3", "epochs:3"])
def test_malformed_override(override: str) -> None:
    with pytest.raises(PneumoError, match="key=value"):
        load_config("seed", [override])


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match="not found") as err:
        load_config(tmp_path / "nope.yaml")
    message = str(err.value)
    assert "nope.yaml" in message and "seed" in message  # it lists the shipped names


def test_unknown_config_name() -> None:
    with pytest.raises(PneumoError, match="'fast' not found"):
        load_config("fast")


def test_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match="not valid YAML"):
        load_config(_write(tmp_path, "epochs: [3\n"))


def test_yaml_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match="mapping"):
        load_config(_write(tmp_path, "- epochs\n- 3\n"))


def test_blank_string_key_is_not_the_text_none(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "cache_dir:\n"))
    assert cfg.cache_dir == ""  # blank means the default cache folder


# --- the rules table: every key, its kind and its range (issue 17) -----------------------------


def test_every_key_has_a_rule() -> None:
    keys = {f.name for f in dataclasses.fields(Config) if f.name != "augment"}
    keys |= {f"augment.{f.name}" for f in dataclasses.fields(AugmentConfig)}
    assert set(RULES) == keys


def test_the_defaults_pass_their_own_rules() -> None:
    assert config_from_dict({}) == Config()


@pytest.mark.parametrize(
    "override",
    [
        # the examples
        "lr=nan",
        "lr=.nan",
        "lr=-1",
        "lr=0",
        "weight_decay=-1",
        "adam_eps=-1",
        "adam_eps=0",
        "seed=-1",
        "eval_batch_size=0",
        "dropout=2",
        "label_smoothing=5",
        "bn_recalibrate=-1",
        "threshold=true",
        "image_size=1000000",
        "epochs=.inf",
        # variants: each numeric key past either end, infinities, NaNs, bools, lists, strings
        "lr=.inf",
        "lr=1e39",
        "lr=true",
        "lr=[0.1]",
        "weight_decay=11",
        "weight_decay=.nan",
        "adam_eps=2",
        "momentum=1",
        "momentum=-0.1",
        "label_smoothing=1",
        "label_smoothing=-0.1",
        "ema=1",
        "ema=-0.5",
        "dropout=1",
        "dropout=-0.1",
        "val_fraction=-1",
        "val_fraction=.nan",
        "warmup_epochs=-1",
        "warmup_epochs=.inf",
        "warmup_epochs=26",
        "seed=4294967296",
        "seed=1.5",
        "seed=true",
        "seed=1e400",
        "split_seed=-2",
        "image_size=31",
        "image_size=1025",
        "image_size=-.inf",
        "image_size=64.5",
        "batch_size=4097",
        "batch_size=-3",
        "epochs=10001",
        "epochs=-.inf",
        "epochs=.nan",
        "epochs=false",
        "epochs=[3]",
        "epochs={a: 1}",
        "limit=-1",
        "limit=1e12",
        "eval_batch_size=8193",
        "eval_batch_size=1.5",
        "workers=-1",
        "workers=257",
        "bn_recalibrate=1e9",
        "bn_recalibrate=null",
        "threshold=-0.1",
        "threshold=1.01",
        "threshold=.nan",
        "threshold=.inf",
        "threshold=false",
        "threshold=Youden",
        "threshold=[0.5]",
        "threshold=",
        "amp=yes please",
        "amp=0",
        "strict=null",
        "compile=[]",
        "augment.hflip=1.5",
        "augment.hflip=-1",
        "augment.erase=2",
        "augment.rotate_deg=181",
        "augment.rotate_deg=-1",
        "augment.rotate_deg=.nan",
        "augment.scale=1",
        "augment.translate=0.6",
        "augment.brightness=1.5",
        "augment.contrast=2",
        "augment.gamma=3",
        "augment.noise=-0.1",
        "augment.aspect=5",
        "augment.aspect=.inf",
        "augment.noise=true",
    ],
)
def test_out_of_range_or_wrong_kind_is_refused(override: str) -> None:
    key = override.split("=")[0]
    with pytest.raises(PneumoError, match=rf"config key '{key}' must be") as err:
        load_config("seed", [override])
    assert "\n" not in str(err.value) and "got" in str(err.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("threshold: true\n", "threshold"),  # was stored as 1.0: every film NORMAL
        ("threshold: yes\n", "threshold"),
        ("epochs: .inf\n", "epochs"),
        ("lr: .nan\n", "lr"),
        ("lr: -1.0e-3\n", "lr"),
        ("image_size: 1000000\n", "image_size"),
        ("image_size: 2024-01-01\n", "image_size"),
        ("data: [a, b]\n", "data"),
        ("data: {a: b}\n", "data"),
        ("data: true\n", "data"),
        ("data: 1.5\n", "data"),
        ("model: ''\n", "model"),
        ("optimizer: [adam]\n", "optimizer"),
        ("task: 1\n", "task"),
        ("amp: 1\n", "amp"),
        ("augment:\n  erase: 7\n", "augment.erase"),
        ("augment:\n  gamma: .inf\n", "augment.gamma"),
        ("augment:\n  noise: !!binary aGVsbG8=\n", "augment.noise"),
        ("warmup_epochs: 3\nepochs: 2\n", "warmup_epochs"),
    ],
)
def test_bad_value_in_a_file_names_its_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(PneumoError, match=rf"config key '{key}' must be"):
        load_config(_write(tmp_path, text))


@pytest.mark.parametrize("digits", [5000, 100_000])
def test_a_huge_integer_is_refused_with_a_short_message(tmp_path: Path, digits: int) -> None:
    """Past Python's int-digit limit YAML's int() raises ValueError; it must come out as the key's error."""
    for load in (
        lambda: load_config(_write(tmp_path, f"epochs: {'9' * digits}\n")),
        lambda: load_config("seed", [f"epochs={'9' * digits}"]),
    ):
        with pytest.raises(PneumoError, match="config key 'epochs'") as err:
            load()
        assert len(str(err.value)) < 300


@pytest.mark.parametrize("value", [10**4000, -(10**4000), 2**64, float("nan"), float("inf"), True, "twelve", [1], {"a": 1}, None, b"3"])
def test_checkpoint_configs_are_checked_too(value: object) -> None:
    """config_from_dict (a checkpoint's config) goes through the same rules; a 4000-digit int is not repr'd."""
    with pytest.raises(PneumoError, match="config key 'epochs' must be in") as err:
        config_from_dict({"epochs": value})
    assert len(str(err.value)) < 300


def test_checkpoint_config_must_be_a_mapping() -> None:
    with pytest.raises(PneumoError, match="mapping"):
        config_from_dict(["epochs", 3])  # type: ignore[arg-type]
    with pytest.raises(PneumoError, match="'augment' must be a mapping"):
        config_from_dict({"augment": 5})


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("lr=1e-4", ("lr", 1e-4)),  # YAML 1.1 reads 1e-4 as a string: still a number here
        ("lr=10", ("lr", 10.0)),
        ("threshold=0", ("threshold", 0.0)),
        ("threshold=1", ("threshold", 1.0)),
        ("threshold=5e-1", ("threshold", 0.5)),
        ("threshold=shift", ("threshold", "shift")),
        ("epochs=1e3", ("epochs", 1000)),
        ("epochs=10000", ("epochs", 10000)),
        ("seed=4294967295", ("seed", 2**32 - 1)),
        ("split_seed=-1", ("split_seed", -1)),
        ("image_size=32", ("image_size", 32)),
        ("image_size=1024", ("image_size", 1024)),
        ("warmup_epochs=25", ("warmup_epochs", 25.0)),
        ("data=0123", ("data", "0123")),  # a folder, not the octal number 83
        ("data=2024-01-01", ("data", "2024-01-01")),
        ("data=/x/y: z", ("data", "/x/y: z")),
        ("data='quoted path'", ("data", "quoted path")),
        ("cache_dir=", ("cache_dir", "")),
        ("cache_dir=null", ("cache_dir", "")),
        ("augment.scale=0.9", ("augment.scale", 0.9)),
        ("momentum=0", ("momentum", 0.0)),
    ],
)
def test_values_at_and_inside_the_bounds_are_taken(override: str, expected: tuple[str, object]) -> None:
    cfg = load_config("seed", [override])
    key, value = expected
    owner, _, name = key.rpartition(".")
    got = getattr(cfg.augment if owner else cfg, name)
    assert got == value and type(got) is type(value)


def test_every_shipped_config_in_either_folder_loads() -> None:
    for path in [*named_configs().values(), *(PROJECT / "configs").glob("*.yaml")]:
        assert isinstance(load_config(path), Config), path


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("epoch", "epochs"),
        ("learning_rat", "lr_"),
        ("img_size", "image_size"),
        ("thresh", "threshold"),
        ("augment.rotation", "augment.rotate_deg"),
    ],
)
def test_unknown_keys_get_the_nearest_known_key(key: str, suggestion: str) -> None:
    with pytest.raises(PneumoError, match=f"unknown config key '{key}'") as err:
        load_config("seed", [f"{key}=3"])
    message = str(err.value)
    assert "known keys:" in message
    if not suggestion.endswith("_"):
        assert f"did you mean '{suggestion}'?" in message


def test_unknown_key_in_a_file_suggests_too(tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match="unknown config key 'epoch'; did you mean 'epochs'\\?"):
        load_config(_write(tmp_path, "epoch: 3\n"))
    with pytest.raises(PneumoError, match="unknown config key 1;"):
        load_config(_write(tmp_path, "1: 3\n"))
    with pytest.raises(PneumoError, match="unknown config key") as err:
        load_config(_write(tmp_path, f"{'k' * 1000}: 3\n"))  # YAML allows keys of up to 1024 characters
    assert len(str(err.value)) < 1000


# --- the reader: what is opened, how much is read, how YAML is parsed -------------------------------


def _billion_laughs() -> str:
    lines = ['data: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        prev, this = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"model: &{this} [{', '.join(['*' + prev] * 9)}]" if i == 1 else f"x{i}: &{this} [{', '.join(['*' + prev] * 9)}]")
    lines.append("train_split: *j")
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_fails_at_the_first_anchor(tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match="anchors and aliases .* are not allowed") as err:
        load_config(_write(tmp_path, _billion_laughs()))
    assert len(str(err.value)) < 300


@pytest.mark.parametrize("text", ["epochs: &e 3\n", "epochs: 3\nseed: *e\n", "augment: &a {}\n", "<<: *e\n"])
def test_any_anchor_or_alias_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(PneumoError):
        load_config(_write(tmp_path, text))


def test_an_alias_in_an_override_is_only_text() -> None:
    with pytest.raises(PneumoError, match="config key 'epochs' must be"):
        load_config("seed", ["epochs=&a [*a, *a]"])
    assert load_config("seed", ["data=&x"]).data == "&x"  # a string key keeps the text as typed


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match="nested more than"):
        load_config(_write(tmp_path, "augment: " + "[" * 100_000))
    with pytest.raises(PneumoError, match="config key 'epochs' must be"):
        load_config("seed", ["epochs=" + "[" * 5000])


@pytest.mark.parametrize(
    "text",
    [
        "epochs: [" + "1, " * 300_000 + "]\n",  # 20 s to parse before the value count was limited
        "augment: {" + ", ".join(f"k{i}: 1" for i in range(80_000)) + "}\n",
        "epochs: 1" + ":59" * 300_000 + "\n",  # a base-60 integer: quadratic time to convert
        "lr: 1" + ":59" * 300_000 + ".5\n",
    ],
)
def test_big_documents_are_refused_by_key_or_count(tmp_path: Path, text: str) -> None:
    with pytest.raises(PneumoError, match="more than 1000 YAML values|config key '(epochs|lr)' must be") as err:
        load_config(_write(tmp_path, text))
    assert len(str(err.value)) < 300


def test_a_repeated_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match="'epochs' is given twice \\(lines 1 and 3\\)"):
        load_config(_write(tmp_path, "epochs: 3\nseed: 1\nepochs: 30\n"))


def test_a_non_utf8_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("model: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(PneumoError, match="not UTF-8 text \\(byte 0xe9 at offset 10\\)"):
        load_config(path)


def test_a_utf8_bom_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfepochs: 3\n")
    assert load_config(path).epochs == 3


@pytest.mark.parametrize("text", ["epochs: 3\n\x00\n", "epochs: \x07\n"])
def test_control_characters_are_invalid_yaml(tmp_path: Path, text: str) -> None:
    with pytest.raises(PneumoError, match="not valid YAML"):
        load_config(_write(tmp_path, text))


def test_a_config_over_one_megabyte_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match="over the limit of 1 MB"):
        load_config(_write(tmp_path, "# " + "x" * 1_000_000 + "\nepochs: 3\n"))


def test_a_folder_is_not_a_config(tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match="is a folder"):
        load_config(tmp_path)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_dev_zero_is_refused_at_once() -> None:
    with pytest.raises(PneumoError, match="not a regular file"):
        load_config("/dev/zero")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            load_config(fifo)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():  # it blocked opening the FIFO: let it go by opening the other end
        with open(fifo, "w"):
            pass
        pytest.fail("load_config blocked on a FIFO")
    assert isinstance(outcome[0], PneumoError) and "not a regular file" in str(outcome[0])


@pytest.mark.parametrize("source", ["a\x00b.yaml", "x" * 10_000, 42, ["seed"]])
def test_odd_sources_are_refused_in_one_line(source: object) -> None:
    with pytest.raises(PneumoError) as err:
        load_config(source)  # type: ignore[arg-type]
    assert len(str(err.value)) < 300


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "epochs: 3\n")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: the file stays readable")
        with pytest.raises(PneumoError, match="cannot read config"):
            load_config(path)
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize(
    "text",
    ["epochs: [3\n", "epochs: 3\n  seed: 1\n", "a: b: c\n", "epochs: !!python/object:os.system x\n", "epochs: !!float abc\n", "{\n"],
)
def test_yaml_errors_are_one_line(tmp_path: Path, text: str) -> None:
    with pytest.raises(PneumoError, match="config .*bad.yaml|config key .epochs. must be") as err:
        load_config(_write(tmp_path, text))
    assert "\n" not in str(err.value) and len(str(err.value)) < 400


def test_an_override_value_over_the_limit_is_refused() -> None:
    with pytest.raises(PneumoError, match="'data' is 20000 characters long"):
        load_config("seed", ["data=" + "x" * 20_000])
    with pytest.raises(PneumoError, match="config key 'data' must be a string of 1-4096"):
        load_config("seed", ["data=" + "x" * 5000])


def test_an_override_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(PneumoError, match="key=value"):
        load_config("seed", [3])  # type: ignore[list-item]


def test_a_student_may_keep_its_teachers_threshold_only_when_it_has_a_teacher() -> None:
    assert load_config("default", ["teacher=bundled", "threshold=teacher"]).threshold == "teacher"
    with pytest.raises(PneumoError, match="threshold' is teacher, but no teacher is set"):
        load_config("default", ["threshold=teacher"])


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ("epochs=2", "overrides must be a list of 'key=value' strings, or None; got 'epochs=2' (str)"),  # not its characters
        (5, "got 5 (int)"),
        ({"epochs": 2}, "got {'epochs': 2} (dict)"),
        (b"epochs=2", "got b'epochs=2' (bytes)"),
    ],
    ids=repr,
)
def test_overrides_that_are_not_a_list_are_refused_naming_them(overrides: object, fragment: str) -> None:
    with pytest.raises(PneumoError) as err:
        load_config("seed", overrides)  # type: ignore[arg-type]
    assert fragment in str(err.value)
    assert load_config("seed", ("epochs=2",)).epochs == 2  # a tuple is a list


@pytest.mark.parametrize("source", [3, b"seed", "a\x00b.yaml", "x" * 300, ["seed"]], ids=lambda v: repr(v)[:20])
def test_a_source_that_is_not_a_path_is_refused_naming_it(source: object) -> None:
    with pytest.raises(PneumoError, match=r"^source must be a YAML file or a shipped config name \(seed, default, cpu\)"):
        load_config(source)  # type: ignore[arg-type]


def test_check_config_checks_a_config_built_by_hand_as_a_file() -> None:
    assert check_config(load_config("seed")) == load_config("seed")
    with pytest.raises(PneumoError, match="config key 'epochs' must be in"):
        check_config(Config(epochs=0))
    with pytest.raises(PneumoError, match=r"^config must be a Config: load_config\("):
        check_config({"epochs": 1})
