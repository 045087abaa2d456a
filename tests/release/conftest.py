"""A real MLflow registry in a temporary folder (sqlite store, as the pipeline uses by default)."""
import json

import pytest

from tasks import tracking
from tests.conftest import configured

QUANTIZED = {"merged_ppl": 9.4, "quantized_ppl": 9.6, "ppl_ratio": 1.0213, "merged_mb": 260.0, "quantized_mb": 159.0}
SERVING = {"ttft_median_ms": 100, "tpot_median_ms": 30, "output_tok_s": 100, "requests_failed": 0, "concurrency": 4,
           "vllm_metrics": {}}
RAG = {"questions": 4, "passages": 9, "top_k": 3, **{f"{k}{rate}": v for k in (
    "recall_at_k", "mrr", "ndcg_at_k", "non_llm_context_recall", "non_llm_context_precision", "semantic_similarity")
    for rate, v in (("", 0.5), ("_nan_rate", 0.0))}}
TASK = {"heldout_reply_choice": {"acc": 0.5, "acc_norm": 0.75}}
# a whole evaluation as the evaluate stage writes it (tasks/evaluate/figures.py:Evaluation), no judge, no champion
GOOD = {"ppl": {"base": 10.0, "sft": 9.0, "dpo": 9.5, "served": 9.5, "previous_held_out": 9.6}, "pref_accuracy": 0.8,
        "pref_likelihood_accuracy": {"sft": 0.5, "dpo": 0.6}, "rouge_l": 0.2, "serving": SERVING, "rag": RAG,
        "benchmark": {m: TASK for m in ("base", "sft", "dpo", "served")}, "benchmark_acc": 0.5, "canaries": None,
        "champion": None, "judge": None, "time_s": {"candidate: answers": 1.0}}


def champion_of(version: int) -> dict:
    """The champion's figures as evaluate measures them beside the candidate: GOOD's."""
    return {"version": version, "ppl": {k: GOOD["ppl"][k] for k in ("served", "previous_held_out")}, "rag": RAG,
            "benchmark": TASK,
            "benchmark_acc": GOOD["benchmark_acc"], "rouge_l": GOOD["rouge_l"], "serving": SERVING}


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracking.configure(configured("tracking", tracking_uri=f"sqlite:///{tmp_path}/db.sqlite",
                                      artifact_root=str(tmp_path / "art"), experiment="t"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (tmp_path / "smoke_test.json").write_text(json.dumps({"smoke_answer": "Paris."}))
    (tmp_path / "quantize.json").write_text(json.dumps(QUANTIZED))
    return tmp_path
