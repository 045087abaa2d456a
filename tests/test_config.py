import pytest
from pydantic import ValidationError

from tasks.config import load_config
from tests.conftest import ROOT


def test_params_yaml_loads_and_overrides_apply():
    cfg = load_config(ROOT / "params.yaml", ["sft.max_steps=3", "deploy.host=127.0.0.1"])
    assert cfg.sft.max_steps == 3
    assert cfg.deploy.host == "127.0.0.1"


def test_misspelled_key_fails_loudly(tmp_path):
    (tmp_path / "params.yaml").write_text("sft:\n  max_step: 3\n")
    with pytest.raises(ValidationError, match="max_step"):
        load_config(tmp_path / "params.yaml")


def test_dvc_stages_match_the_runner():
    import yaml

    from tasks.stages import STAGES

    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(dvc) == [s.name for s in STAGES]
    assert all(stage["cmd"] == f"python -m tasks {name}" for name, stage in dvc.items())
