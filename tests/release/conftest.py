"""A real MLflow registry in a temporary folder (sqlite store, as the pipeline uses by default)."""
import json

import pytest

from tasks import tracking
from tests.conftest import configured

QUANTIZED = {"merged_ppl": 9.4, "quantized_ppl": 9.6, "ppl_ratio": 1.0213, "merged_mb": 260.0, "quantized_mb": 159.0}


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracking.configure(configured("tracking", tracking_uri=f"sqlite:///{tmp_path}/db.sqlite",
                                      artifact_root=str(tmp_path / "art"), experiment="t"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (tmp_path / "deployment.json").write_text(json.dumps({"smoke_answer": "Paris."}))
    (tmp_path / "quantize.json").write_text(json.dumps(QUANTIZED))
    return tmp_path
