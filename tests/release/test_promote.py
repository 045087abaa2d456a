"""promote and rollback move @champion in a real registry, leave an audit trail in version tags, refuse a version
whose gates failed unless forced with a reason, and the CLI says what it did or why not."""
import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tasks.release.promote import PromotionError, promote, rollback
from tests.conftest import ROOT
from tests.release.test_register import GOOD, _register, measured_against


def champion() -> int:
    return int(MlflowClient().get_model_version_by_alias("m", "champion").version)


@pytest.fixture
def three_versions(store):
    """v1 champion, v2 champion (replaced v1, gates passed), v3 challenger (its gates failed)."""
    _register(store, GOOD)
    _register(store, measured_against(1))
    _register(store, measured_against(2, served=9.9))
    assert champion() == 2
    return store


def test_register_starts_the_audit_trail(three_versions):
    tags = MlflowClient().get_model_version("m", "2").tags
    assert tags["promoted_by"] == "register" and tags["previous_champion"] == "1" and tags["gates"] == "passed"
    assert tags["promoted_at"].endswith("+00:00")


def test_a_version_whose_gates_failed_needs_force_and_a_reason(three_versions):
    with pytest.raises(PromotionError, match="did not pass its gates .served ppl vs champion"):
        promote("m", 3)
    with pytest.raises(PromotionError):
        promote("m", 3, force=True)                       # forced, but no reason given
    assert champion() == 2                                # nothing moved
    assert promote("m", 3, reason="hotfix: v2 answers in the wrong language", force=True)["champion"] == 3
    tags = MlflowClient().get_model_version("m", "3").tags
    assert champion() == 3 and tags["previous_champion"] == "2" and tags["promoted_by"] == "promote"
    assert tags["promotion_reason"] == "hotfix: v2 answers in the wrong language"


def test_rollback_walks_back_one_champion_at_a_time(three_versions):
    assert rollback("m", "v2 regressed in production") == {"champion": 1, "rolled_back_from": 2}
    tags = MlflowClient().get_model_version("m", "1").tags
    assert champion() == 1 and tags["promoted_by"] == "rollback" and tags["rolled_back_from"] == "2"
    with pytest.raises(PromotionError, match="nothing to roll back to"):
        rollback("m")                                     # v1 replaced no champion
    assert champion() == 1


def test_promote_refuses_an_unknown_version_and_the_current_champion(three_versions):
    with pytest.raises(PromotionError, match="no version 9"):
        promote("m", 9)
    with pytest.raises(PromotionError, match="already @champion"):
        promote("m", 2)


def test_the_cli_moves_the_alias_and_explains_a_refusal(three_versions):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["tracking"] |= {"tracking_uri": f"sqlite:///{three_versions}/db.sqlite", "registered_model": "m",
                           "experiment": "t", "artifact_root": str(three_versions / "art")}
    (three_versions / "params.yaml").write_text(yaml.safe_dump(params))

    def cli(*args):
        command = [sys.executable, "-m", "tasks", *args, "--params", "params.yaml"]
        return subprocess.run(command, cwd=three_versions, capture_output=True, text=True, timeout=120, check=False)

    refused = cli("promote", "3")
    assert refused.returncode == 1 and "--force --reason" in refused.stderr and champion() == 2
    done = cli("rollback", "--reason", "bad answers")
    assert done.returncode == 0 and "version 1 (rollback)" in done.stdout and champion() == 1
