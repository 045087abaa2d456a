"""A real vLLM server (the serving env, started as a user would) on a real quantized checkpoint."""
import pytest

from tasks.config import DeployConfig, QuantizeConfig
from tasks.deploy import ServerError, VLLMServer, deploy
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
SERVE_PY = str(ROOT / ".venv-serve" / "bin" / "python")


def test_quantized_model_is_served_and_answers(base_model_dir, tiny_sets, tmp_path):
    from peft import LoraConfig, get_peft_model

    from tasks.modeling import load_model
    from tasks.quantize import merge_and_quantize

    adapter = tmp_path / "adapter"   # an untrained LoRA (B=0): merging it must leave the model's answers intact
    get_peft_model(load_model(base_model_dir), LoraConfig(r=4, target_modules="all-linear")).save_pretrained(adapter)
    q = merge_and_quantize(QuantizeConfig(scheme="W8A8"), base_model_dir, adapter, tiny_sets["sft"],
                           tmp_path / "merged", tmp_path / "quantized")
    assert q["quantized_mb"] < 0.7 * q["merged_mb"]
    assert q["quantized_ppl"] < 1.1 * q["merged_ppl"]

    result = deploy(DeployConfig(python=SERVE_PY), tmp_path / "quantized", tmp_path / "deployment.json")
    assert "paris" in result["smoke_answer"].lower()
    assert result["completion_tokens"] > 0


def test_server_that_cannot_start_fails_with_the_cause(tmp_path):
    (tmp_path / "not-a-model").mkdir()
    server = VLLMServer(DeployConfig(python=SERVE_PY, startup_timeout_s=120), tmp_path / "not-a-model")
    with pytest.raises(ServerError, match="exited with code"):
        server.start()
    assert server.proc.poll() is not None


def test_missing_serving_env_is_a_clear_error(tmp_path):
    with pytest.raises(ServerError, match="make setup"):
        VLLMServer(DeployConfig(python=str(tmp_path / "nope" / "python")), tmp_path)
