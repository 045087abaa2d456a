"""Gates decide the alias in a real MLflow registry (sqlite store, as the pipeline uses by default)."""
import json

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tasks import tracking
from tasks.config import GatesConfig, TrackingConfig
from tasks.release.register import register

GOOD = {"ppl": {"base": 10.0, "sft": 9.0, "dpo": 9.5, "served": 9.5}, "pref_accuracy": 0.8, "rouge_l": 0.2,
        "serving": {"ttft_median_ms": 100, "tpot_median_ms": 30, "output_tok_s": 100, "requests_failed": 0,
                    "concurrency": 4}}
QUANTIZED = {"merged_ppl": 9.4, "quantized_ppl": 9.6, "ppl_ratio": 1.0213, "merged_mb": 260.0, "quantized_mb": 159.0}


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracking.configure(TrackingConfig(tracking_uri=f"sqlite:///{tmp_path}/db.sqlite",
                                      artifact_root=str(tmp_path / "art"), experiment="t"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (tmp_path / "deployment.json").write_text(json.dumps({"smoke_answer": "Paris."}))
    (tmp_path / "quantize.json").write_text(json.dumps(QUANTIZED))
    return tmp_path


def _register(store, metrics, quantization=QUANTIZED):
    (store / "metrics.json").write_text(json.dumps(metrics))
    (store / "quantize.json").write_text(json.dumps(quantization))
    with mlflow.start_run():
        return register(GatesConfig(), "m", store / "model", store / "metrics.json", store / "quantize.json",
                        store / "deployment.json", store / "registration.json", store / "report.md")


def test_champion_only_when_all_gates_pass(store):
    assert _register(store, GOOD)["alias"] == "champion"
    assert int(MlflowClient().get_model_version_by_alias("m", "champion").version) == 1
    assert "all gates passed" in (store / "report.md").read_text()


def test_failed_gate_gives_challenger_and_says_why(store):
    worse = {**GOOD, "ppl": {**GOOD["ppl"], "dpo": 12.0}}   # DPO 20% worse than base
    result = _register(store, worse)
    assert result["alias"] == "challenger" and result["gates_failed"] == 1
    assert int(MlflowClient().get_model_version_by_alias("m", "challenger").version) == 1
    with pytest.raises(mlflow.exceptions.MlflowException):
        MlflowClient().get_model_version_by_alias("m", "champion")
    assert "failed gates: DPO ppl vs base" in (store / "report.md").read_text()


@pytest.mark.parametrize(("quantization", "served", "gate"), [
    ({**QUANTIZED, "quantized_ppl": 13.5, "ppl_ratio": 1.4362}, 13.5, "quantized ppl vs merged"),   # lossy 4-bit
    (QUANTIZED, 11.0, "served ppl vs quantized"),        # vLLM serves something else than what was measured
])
def test_quantization_and_serving_gates_compare_like_with_like(store, quantization, served, gate):
    result = _register(store, {**GOOD, "ppl": {**GOOD["ppl"], "served": served}}, quantization)
    assert result["alias"] == "challenger" and result["gates_failed"] == 1
    assert f"failed gates: {gate}" in (store / "report.md").read_text()
