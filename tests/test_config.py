"""pneumo.config: shipped recipes, overrides, and loud failures for typos and bad values."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from pneumo.config import AugmentConfig, Config, config_to_dict, load_config, named_configs
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
    with pytest.raises(PneumoError, match="'image_size' must be a int"):
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
