"""params.yaml is the one place where settings live: the config classes validate it and hold no values of their own,
refuse values outside their ranges, and say what is wrong in one line."""
import subprocess
import sys
from typing import get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from tasks.config import (
    Config,
    ConfigError,
    ParamsView,
    SourceConfig,
    UndeclaredParam,
    changed,
    flat_params,
    load_config,
)
from tests.conftest import PARAMS, ROOT, configured


def sections(model: type[BaseModel], prefix: str = ""):
    """Every config class under `model` with its dotted name, `model` first; a list's entries as `list.[].`."""
    yield prefix, model
    for name, field in model.model_fields.items():
        annotation, entry = field.annotation, ""
        if get_origin(annotation) is list:
            annotation, entry = get_args(annotation)[0], "[]."
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from sections(annotation, f"{prefix}{name}.{entry}")


def test_no_config_class_holds_a_default_so_none_can_differ_from_params_yaml():
    """But the optional keys of an ingest.sources entry: params.yaml cannot hold defaults for the entries a user adds."""
    with_default = [f"{prefix}{name}" for prefix, model in sections(Config)
                    for name, field in model.model_fields.items() if not field.is_required()]
    assert with_default == [f"ingest.sources.[].{name}" for name in SourceConfig.model_fields if name != "path"]
    with pytest.raises(ValidationError, match="Field required"):
        Config.model_fields["sft"].annotation()      # nothing to build a stage's settings from but params.yaml


def test_every_key_of_params_yaml_is_a_field_and_every_field_a_key():
    raw = yaml.safe_load(PARAMS.read_text())
    cfg = load_config(PARAMS)
    # validation changed nothing, dropped nothing, added nothing (but a source's optional keys, left unset)
    assert cfg.model_dump(exclude_unset=True) == raw


@pytest.mark.parametrize("key", ["sft.max_steps", "clean.near_dedup.normalise.width", "vllm.env"])
def test_a_key_missing_from_params_yaml_fails_naming_it(tmp_path, key):
    raw = yaml.safe_load(PARAMS.read_text())
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node[part]
    del node[leaf]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=rf"params.yaml: {key}: missing"):
        load_config(tmp_path / "params.yaml")


def test_params_yaml_loads_and_overrides_apply():
    cfg = load_config(PARAMS, ["sft.max_steps=3", "vllm.host=127.0.0.1"])
    assert cfg.sft.max_steps == 3
    assert cfg.vllm.host == "127.0.0.1"


def test_misspelled_key_fails_loudly(tmp_path):
    raw = yaml.safe_load(PARAMS.read_text())
    raw["sft"]["max_step"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"sft.max_step: unknown key \(did you mean sft.max_steps\?\)"):
        load_config(tmp_path / "params.yaml")
    with pytest.raises(ConfigError, match=r"ingest.sources.0.wieght: unknown key \(did you mean ingest.sources.0.weight"):
        load_config(PARAMS, ["ingest.sources=[{path: a.jsonl, wieght: 1}]"])


@pytest.mark.parametrize("override, said", [
    ("clean.quality.max_chars=-1", "clean.quality.max_chars: Input should be greater than or equal to 1"),
    ("clean.quality.min_chars=30000", "max_chars (20000) must be above min_chars (30000)"),
    ("sft.max_steps=-1", "sft.max_steps: Input should be greater than or equal to 1"),
    ("sft.learning_rate=-0.1", "sft.learning_rate: Input should be greater than or equal to 0"),
    ("sft.per_device_batch_size=0", "sft.per_device_batch_size: Input should be greater than or equal to 1"),
    ("dpo.beta=-1", "dpo.beta: Input should be greater than 0"),
    ("vllm.port=70000", "vllm.port: Input should be less than or equal to 65535"),
    ("clean.pii.phone_regions=[US, XX]", "clean.pii.phone_regions: unknown phone region XX"),
    ("clean.language.languages=[english]", "clean.language.languages.0: String should match pattern"),
    ("gates.min_rouge_l=1.5", "gates.min_rouge_l: Input should be less than or equal to 1"),
    ("ingest.sources=[{path: a.jsonl, columns: {query: q}}]",
     "ingest.sources.0.columns.query.[key]: Input should be 'messages', 'conversations'"),
    ("ingest.sources=[{path: a.jsonl, roles: {bot: robot}}]",
     "ingest.sources.0.roles.bot: Input should be 'system', 'user' or 'assistant' (got 'robot')"),
    ("ingest.sources=[]", "ingest.sources: List should have at least 1 item"),
    ("ingest.sources=[{path: raw/a.jsonl}, {path: old/a.jsonl.gz}, {path: b.jsonl}]",
     "ingest: more than one source named a: give each a name of its own (name: ...)"),
    ("ingest.sources=[{path: a.jsonl, name: mine}, {path: b.jsonl, name: mine}]", "more than one source named mine"),
    ("ingest.sources=[{path: my chats.jsonl}]", "ingest: source name 'my chats' is not letters, digits, '.', '_' or '-'"),
    ("ingest.sources=[{path: a.jsonl, weight: 0.7}, {path: b.jsonl}, {path: c.jsonl, weight: 0.3}]",
     "ingest: weight is set on a, c but not on b: set it on every source, or on none"),
    ("ingest.sources=[{path: a.jsonl, weight: 0}, {path: b.jsonl, weight: 1}]",
     "ingest.sources.0.weight: Input should be greater than 0 (got 0)"),
    ("ingest.sources=[{path: a.jsonl, weight: -0.5}]", "ingest.sources.0.weight: Input should be greater than 0"),
    ("ingest.sources=[{path: a.jsonl, max_rows: -1}]", "ingest.sources.0.max_rows: Input should be greater than or equal"),
])
def test_a_value_outside_its_range_is_refused_in_one_line_naming_the_key(override, said):
    with pytest.raises(ConfigError) as err:
        load_config(PARAMS, [override])
    assert said in str(err.value) and "\n" not in str(err.value)


def test_yaml_syntax_errors_name_the_line(tmp_path):
    (tmp_path / "params.yaml").write_text("runtime:\n  seed: 42\n  offline: [true\n")
    with pytest.raises(ConfigError, match=r"params.yaml:4:1: not valid YAML: expected ',' or ']'"):
        load_config(tmp_path / "params.yaml")


@pytest.mark.parametrize("params, said", [("missing.yaml", "missing.yaml: cannot read the settings: No such file"),
                                          ("typo.yaml", "sft.max_step: unknown key (did you mean sft.max_steps?)")])
def test_the_cli_prints_a_users_mistake_in_one_line_and_exits_2_or_its_traceback_with_debug(tmp_path, params, said):
    raw = yaml.safe_load(PARAMS.read_text())
    raw["sft"]["max_step"] = raw["sft"].pop("max_steps")
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(raw))
    command = [sys.executable, "-m", "tasks", "run", "sft", "--params", str(tmp_path / params)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and not done.stdout, done.stderr
    assert lines[0].startswith(f"python -m tasks run: {tmp_path / params}: ") and said in lines[0]
    debug = subprocess.run([*command, "--debug"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr


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
