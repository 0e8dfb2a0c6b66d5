from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from vla_rl.core.config import ConfigError, describe, load_config, option, to_dict


@dataclass(frozen=True)
class Inner:
    size: int = option(64, "pixels")
    scale: float = option(1.0, "a number")


@dataclass(frozen=True)
class Outer:
    name: str = option("run", "run name")
    mode: Literal["a", "b"] = option("a", "which mode")
    tasks: tuple[str, ...] = option(("x",), "task names")
    inner: Inner = option(factory=Inner, doc="nested section")
    out: Path = option(Path("runs"), "output dir")


@dataclass(frozen=True)
class Embedding:
    """A config whose nested default differs from its class's defaults (like the quickstart's ``train``)."""
    inner: Inner = option(factory=lambda: Inner(size=32, scale=3.0), doc="nested section with its own defaults")


def test_partial_nested_mapping_keeps_the_fields_default_instance():
    config = load_config(Embedding, None, ["inner.scale=5"])
    assert config.inner == Inner(size=32, scale=5.0)  # size stays the embedded 32, not the class's 64
    assert load_config(Embedding, {"inner": {}}).inner == Inner(size=32, scale=3.0)
    with pytest.raises(ConfigError, match=r"inner\.sise"):
        load_config(Embedding, {"inner": {"sise": 3}})
    with pytest.raises(ConfigError, match="integer"):
        load_config(Embedding, {"inner": {"size": 1.5}})
    shown = describe(Embedding)
    assert "size: 32" in shown and "scale: 3.0" in shown


def test_defaults_and_nested_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: r1\ninner:\n  size: 96\ntasks: [p, q]\n")
    config = load_config(Outer, path)
    assert config == Outer(name="r1", tasks=("p", "q"), inner=Inner(size=96))
    assert isinstance(config.tasks, tuple)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as error:
        load_config(Outer, {"nmae": "typo"})
    message = str(error.value)
    assert "'nmae'" in message
    for key in ("name", "mode", "tasks", "inner", "out"):
        assert key in message


def test_unknown_nested_key_names_its_path():
    with pytest.raises(ConfigError, match=r"inner\.sise"):
        load_config(Outer, {"inner": {"sise": 3}})


@dataclass(frozen=True)
class Checked:
    size: int = option(64, "pixels, a multiple of 16")

    def __post_init__(self) -> None:
        if self.size % 16:
            raise ValueError(f"size must be a multiple of 16, got {self.size}")


@dataclass(frozen=True)
class HoldsChecked:
    inner: Checked = option(factory=Checked, doc="nested section")


def test_a_nested_sections_own_check_names_the_section():
    """Once "inner.: size must be ..." (the key path's trailing dot)."""
    with pytest.raises(ConfigError, match=r"^inner: size must be a multiple of 16, got 40$"):
        load_config(HoldsChecked, None, ["inner.size=40"])
    with pytest.raises(ConfigError, match=r"^Checked: size must be"):
        load_config(Checked, {"size": 40})

@pytest.mark.parametrize(
    "data, fragment",
    [({"mode": "c"}, "not one of"), ({"inner": {"size": 1.5}}, "integer"), ({"inner": {"size": True}}, "integer"),
     ({"name": 3}, "string"), ({"tasks": "x"}, "list"), ({"inner": 5}, "mapping")],
)
def test_bad_values_are_errors_not_replaced(data, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(Outer, data)


def test_overrides_are_parsed_as_yaml_and_validated():
    config = load_config(Outer, None, ["inner.scale=2", "mode=b", "tasks=[a, b]"])
    assert config.inner.scale == 2.0 and config.mode == "b" and config.tasks == ("a", "b")
    with pytest.raises(ConfigError):
        load_config(Outer, None, ["inner.nope=1"])
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(Outer, None, ["mode"])


def test_an_override_that_is_not_yaml_is_a_config_error_naming_it():
    for override in ("tasks=[a, b", "name=a: b: c"):
        with pytest.raises(ConfigError, match="not a valid YAML value") as error:
            load_config(Outer, None, [override])
        assert repr(override) in str(error.value)


def test_frozen_missing_file_and_roundtrip(tmp_path):
    config = load_config(Outer)
    with pytest.raises(Exception):
        config.name = "changed"  # type: ignore[misc]
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "missing.yaml")
    assert load_config(Outer, to_dict(config)) == config
    assert "nested section" in describe(Outer) and "pixels" in describe(Outer)


def test_describe_shows_paths_as_written_and_a_loaded_configs_values():
    @dataclass(frozen=True)
    class Paths:
        unset: Path = option(Path(""), "a path that must be given")
        files: tuple[Path, ...] = option((Path("a.h5"), Path("b.h5")), "some files")

    shown = describe(Paths)
    assert 'unset: ""  #' in shown and "files: [a.h5, b.h5]  #" in shown and "PosixPath" not in shown
    shown = describe(Outer, defaults=load_config(Outer, None, ["out=runs/x", "inner.size=9"]))
    assert "out: runs/x  #" in shown and "  size: 9  #" in shown


def test_invalid_yaml_is_reported(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, path)


def test_repository_configs_load():
    from sim_envs.demos import DemoConfig

    root = Path(__file__).resolve().parents[2]
    config = load_config(DemoConfig, root / "configs" / "demo.yaml")
    assert config.episodes_per_task >= 1
    from vla_rl.policy.sft import SFTConfig

    assert DemoConfig().out_dir == config.out_dir == SFTConfig().demo_dir  # `vla-rl demos`, then `vla-rl sft`

    for name in ("sft_tabletop", "sft_fewshot", "sft_libero"):
        assert load_config(SFTConfig, root / "configs" / f"{name}.yaml").steps >= 1
    from vla_rl.train.trainer import TrainConfig

    for name in ("tabletop_grpo", "libero_grpo", "wm_grpo"):
        assert load_config(TrainConfig, root / "configs" / f"{name}.yaml").iterations >= 1
    from vla_rl.reward.critic_train import CriticTrainConfig
    from world_model.train import WMTrainConfig

    assert load_config(CriticTrainConfig, root / "configs" / "critic.yaml").steps >= 1
    assert load_config(WMTrainConfig, root / "configs" / "world_model.yaml").steps >= 1


def test_json_configs_keep_exponent_floats(tmp_path):
    import json as _json

    path = tmp_path / "c.json"
    path.write_text(_json.dumps({"inner": {"scale": 1e-06}}))
    assert load_config(Outer, path).inner.scale == 1e-06


@dataclass(frozen=True)
class Shaped:
    point: tuple[float, float] = option((0.0, 0.0), "a fixed-length pair")
    colours: dict[str, tuple[float, float, float]] = option(factory=lambda: {"red": (1.0, 0.0, 0.0)}, doc="a mapping")
    rate: float = option(0.1, "a number")


def test_fixed_length_tuples_mappings_and_exponent_strings():
    assert load_config(Shaped, None, ["point=[1, 2]"]).point == (1.0, 2.0)
    with pytest.raises(ConfigError, match="expected 2 items"):
        load_config(Shaped, None, ["point=[1, 2, 3]"])
    config = load_config(Shaped, None, ["colours={blue: [0, 0, 1]}"])
    assert config.colours == {"blue": (0.0, 0.0, 1.0)}
    with pytest.raises(ConfigError, match="expected 3 items"):
        load_config(Shaped, None, ["colours={blue: [0, 1]}"])
    assert load_config(Shaped, to_dict(config)) == config
    # YAML 1.1 reads 1e-3 as a string; a float field takes it, but never a non-finite or non-numeric one
    assert load_config(Shaped, None, ["rate=1e-3"]).rate == 1e-3
    for bad in ("nan", "inf", "fast"):
        with pytest.raises(ConfigError, match="expected a number"):
            load_config(Shaped, None, [f"rate={bad}"])
