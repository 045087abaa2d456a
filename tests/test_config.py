"""params.yaml is the one place where settings live: the config classes validate it and hold no values of their own."""
import pytest
import yaml
from pydantic import BaseModel, ValidationError

from tasks.config import Config, ParamsView, UndeclaredParam, changed, flat_params, load_config
from tests.conftest import PARAMS, configured


def sections(model: type[BaseModel], prefix: str = ""):
    """Every config class under `model` with its dotted name, `model` first."""
    yield prefix, model
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from sections(field.annotation, f"{prefix}{name}.")


def test_no_config_class_holds_a_default_so_none_can_differ_from_params_yaml():
    with_default = [f"{prefix}{name}" for prefix, model in sections(Config)
                    for name, field in model.model_fields.items() if not field.is_required()]
    assert with_default == []
    with pytest.raises(ValidationError, match="Field required"):
        Config.model_fields["sft"].annotation()      # nothing to build a stage's settings from but params.yaml


def test_every_key_of_params_yaml_is_a_field_and_every_field_a_key():
    raw = yaml.safe_load(PARAMS.read_text())
    cfg = load_config(PARAMS)
    assert cfg.model_dump() == raw                    # validation changed nothing, dropped nothing, added nothing


@pytest.mark.parametrize("key", ["sft.max_steps", "clean.near_dedup.normalise.width", "vllm.env"])
def test_a_key_missing_from_params_yaml_fails_naming_it(tmp_path, key):
    raw = yaml.safe_load(PARAMS.read_text())
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node[part]
    del node[leaf]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValidationError) as err:
        load_config(tmp_path / "params.yaml")
    assert err.value.errors()[0]["loc"] == tuple(key.split(".")) and err.value.errors()[0]["type"] == "missing"


def test_params_yaml_loads_and_overrides_apply():
    cfg = load_config(PARAMS, ["sft.max_steps=3", "vllm.host=127.0.0.1"])
    assert cfg.sft.max_steps == 3
    assert cfg.vllm.host == "127.0.0.1"


def test_misspelled_key_fails_loudly(tmp_path):
    raw = yaml.safe_load(PARAMS.read_text())
    raw["sft"]["max_step"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValidationError, match="max_step"):
        load_config(tmp_path / "params.yaml")


def test_changed_merges_nested_sections_and_validates_again():
    clean = configured("clean", near_dedup={"normalise": {"width": False}})
    assert clean.near_dedup.normalise.width is False and clean.near_dedup.threshold == load_config(
        PARAMS).clean.near_dedup.threshold
    with pytest.raises(ValidationError, match="num_perm"):
        changed(clean.near_dedup, num_perm=100)


def test_a_stage_sees_only_the_keys_it_declares():
    cfg = load_config(PARAMS)
    view = ParamsView(cfg, ("clean", "datasets.test_fraction"), "clean")
    assert view.clean is cfg.clean and view.datasets.test_fraction == cfg.datasets.test_fraction
    with pytest.raises(UndeclaredParam, match="stage 'clean' reads datasets.max_tokens"):
        view.datasets.max_tokens
    with pytest.raises(UndeclaredParam, match="reads sft"):
        view.sft
    assert flat_params(cfg, ("datasets.test_fraction", "clean.near_dedup.normalise")) == {
        "datasets.test_fraction": 0.05, **{f"clean.near_dedup.normalise.{k}": v
                                           for k, v in cfg.clean.near_dedup.normalise.model_dump().items()}}
