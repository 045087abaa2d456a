"""Gates decide the alias in a real MLflow registry (sqlite store, as the pipeline uses by default)."""
import json

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tasks.release.register import register
from tests.conftest import configured
from tests.release.conftest import GOOD, QUANTIZED, RAG, champion_of


def _register(store, metrics, quantization=QUANTIZED, gates=configured("gates")):
    (store / "metrics.json").write_text(json.dumps(metrics))
    (store / "quantize.json").write_text(json.dumps(quantization))
    with mlflow.start_run():
        return register(gates, "m", store / "model", store / "metrics.json", store / "quantize.json",
                        store / "smoke_test.json", store / "registration.json", store / "report.md",
                        store / "vs_champion.png")


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


def measured_against(version: int, **changes) -> dict:
    """A candidate's metrics with the champion `version` measured beside it (the champion's figures are GOOD's)."""
    champion = champion_of(version)
    ours = {**GOOD, "ppl": {**GOOD["ppl"], "served": changes.pop("served", 9.5)},
            "rouge_l": changes.pop("rouge_l", 0.2), "serving": {**GOOD["serving"], **changes}}
    return ours | {"champion": champion}


def test_with_promotion_off_a_better_candidate_stays_challenger(store):
    """gates.promote: false, as CI sets it on a pull request: the gates are measured and recorded, the alias never
    reaches `champion`."""
    assert _register(store, GOOD)["alias"] == "champion"
    better = measured_against(1, served=9.4)
    result = _register(store, better, gates=configured("gates", promote=False))
    assert result["alias"] == "challenger" and result["gates_failed"] == 0 and result["promoted"] == 0
    assert "promotion off (gates.promote: false)" in json.loads((store / "registration.json").read_text())["why"]
    client = MlflowClient()
    assert int(client.get_model_version_by_alias("m", "champion").version) == 1
    assert int(client.get_model_version_by_alias("m", "challenger").version) == 2
    assert client.get_model_version("m", "2").tags["gates"] == "passed"
    assert _register(store, better)["alias"] == "champion"   # the same candidate, promotion on


def test_a_candidate_that_forgot_the_champions_held_out_rows_stays_challenger(store):
    assert _register(store, GOOD)["alias"] == "champion"
    forgot = measured_against(1)
    forgot["ppl"]["previous_held_out"] = 10.5          # +9% on the rows the champion was evaluated on, same elsewhere
    result = _register(store, forgot)
    assert result["alias"] == "challenger"
    assert json.loads((store / "registration.json").read_text())["why"] == \
        "failed gates: served ppl on the champion's held-out rows vs champion"
    old_champion = measured_against(1)                 # a champion registered before versions kept their held-out rows
    old_champion["ppl"]["previous_held_out"] = old_champion["champion"]["ppl"]["previous_held_out"] = None
    assert _register(store, old_champion)["alias"] == "champion"
    skipped = [g for g in json.loads((store / "registration.json").read_text())["gates"] if "skipped" in g]
    assert [g["skipped"] for g in skipped] == ["the champion keeps no held-out set (registered before versions kept it)"]


def test_first_model_has_no_champion_to_beat(store):
    _register(store, GOOD)
    assert "No champion yet" in (store / "report.md").read_text()
    assert not (store / "vs_champion.png").exists()


def test_candidate_worse_than_the_champion_stays_challenger(store):
    assert _register(store, GOOD)["alias"] == "champion"
    result = _register(store, measured_against(1, served=9.9, tpot_median_ms=45))   # +4% ppl, +50% TPOT
    registration = json.loads((store / "registration.json").read_text())
    assert result["alias"] == "challenger" and result["gates_failed"] == 2
    assert registration["why"] == "failed gates: served ppl vs champion, TPOT p50 ms vs champion"
    client = MlflowClient()
    assert int(client.get_model_version_by_alias("m", "champion").version) == 1   # the alias did not move
    assert int(client.get_model_version_by_alias("m", "challenger").version) == 2
    tags = client.get_model_version("m", "2").tags
    assert {k: tags[k] for k in ("gates", "failed_gates", "compared_with_champion")} == {
        "gates": "failed", "failed_gates": "served ppl vs champion, TPOT p50 ms vs champion",
        "compared_with_champion": "1"}
    assert tags["eval.ppl_served"] == "9.9" and tags["eval.tpot_ms"] == "45.0"   # how good, from the registry alone
    assert tags["git.commit"] and tags["params.hash"]
    report = (store / "report.md").read_text()
    assert "| served ppl | 9.9 | 9.5 | 1.0421 | <= 1.02 | **no** |" in report
    assert "| ROUGE-L | 0.2 | 0.2 | 0.0 | >= -0.02 | yes |" in report
    assert (store / "vs_champion.png").stat().st_size > 10_000


def test_better_candidate_takes_over_and_remembers_whom_it_replaced(store):
    _register(store, GOOD)
    result = _register(store, measured_against(1, served=9.3, rouge_l=0.19, ttft_median_ms=140))   # within limits
    assert result["alias"] == "champion" and result["version"] == 2
    version = MlflowClient().get_model_version_by_alias("m", "champion")
    assert int(version.version) == 2 and version.tags["previous_champion"] == "1"


def test_candidate_measured_against_a_replaced_champion_is_refused(store):
    _register(store, GOOD)
    _register(store, measured_against(1))                  # v2 becomes champion
    result = _register(store, measured_against(1, served=9.0))   # better than v1, but v2 is champion now
    assert result["alias"] == "challenger"
    assert "champion unchanged since evaluate" in json.loads((store / "registration.json").read_text())["why"]
    assert int(MlflowClient().get_model_version_by_alias("m", "champion").version) == 2


def judged(win_rate: float, calibration: float) -> dict:
    return {"judge": "j", "opponent": "champion v1", "n": 8, "wins": 1, "losses": 6, "ties": 1, "failed": 0,
            "win_rate": win_rate, "ci95": [0.0, 0.4], "mean_answer_chars": {"candidate": 300.0, "opponent": 310.0},
            "calibration": {"pairs": 15, "accuracy": calibration, "order_flip_rate": 0.1,
                            "parse_failure_rate": 0.0, "accuracy_by_kind": {"empty": 1.0}}}


def test_a_calibrated_judge_that_prefers_the_champion_refuses_the_candidate(store):
    _register(store, GOOD)
    result = _register(store, measured_against(1) | {"judge": judged(0.19, calibration=0.9)})
    assert result["alias"] == "challenger"
    assert json.loads((store / "registration.json").read_text())["why"] == \
        "failed gates: judge win rate vs champion"
    assert "| judge win rate | 0.19 | 0.5 | 0.19 | >= 0.4 | **no** |" in (store / "report.md").read_text()


def test_an_uncalibrated_judge_is_shown_but_does_not_decide(store):
    _register(store, GOOD)
    result = _register(store, measured_against(1) | {"judge": judged(0.19, calibration=0.5)})
    assert result["alias"] == "champion" and result["gates_skipped"] == 1
    report = (store / "report.md").read_text()
    assert "skipped: judge calibration accuracy 0.5 < gates.min_judge_calibration 0.75" in report
    assert "(not decided: judge win rate vs champion)" in report
    assert "Calibration on 15 planted pairs" in report and "win rate **0.19**" in report


def test_the_reward_judge_gates_beside_an_uncalibrated_llm_judge_and_the_report_shows_both(store):
    _register(store, GOOD)
    reward = judged(0.12, calibration=0.9) | {"judge": "reward model data/models/reward"}
    result = _register(store, measured_against(1) | {"judge": judged(0.7, calibration=0.5), "reward_judge": reward})
    assert result["alias"] == "challenger" and result["gates_skipped"] == 1
    assert json.loads((store / "registration.json").read_text())["why"].startswith(
        "failed gates: reward judge win rate vs champion")
    report = (store / "report.md").read_text()
    assert "| | LLM judge | reward model |" in report
    assert "| calibration accuracy | **0.5** on 15 | **0.9** on 15 |" in report
    assert ("| gates this run | skipped: judge calibration accuracy 0.5 < gates.min_judge_calibration 0.75: it "
            "cannot tell planted better replies | yes |") in report


def test_a_figure_the_judge_could_not_score_on_either_side_is_skipped_in_plain_sight(store):
    _register(store, GOOD)
    metrics = measured_against(1)
    rag = RAG | {"judged_questions": 2, "faithfulness": None, "faithfulness_nan_rate": 1.0,
                 **{f"{k}{rate}": v for k in ("answer_relevancy", "context_precision", "context_recall")
                    for rate, v in (("", 0.4), ("_nan_rate", 0.0))}}
    metrics["rag"] = rag | {"semantic_similarity": 0.5}
    metrics["champion"]["rag"] = rag | {"semantic_similarity": 0.49}
    result = _register(store, metrics)
    assert result["alias"] == "champion" and result["gates_skipped"] == 1
    report = (store / "report.md").read_text()
    assert "| RAG faithfulness (judged) | None | None | None |  None | skipped: no score on one side" in report
    assert "| RAG answer similarity | 0.5 | 0.49 | 0.01 | >= -0.03 | yes |" in report


def test_a_renamed_or_missing_figure_is_an_error_naming_it_not_a_skipped_gate(store):
    from pydantic import ValidationError

    _register(store, GOOD)
    renamed = measured_against(1)
    renamed["rougeL"] = renamed.pop("rouge_l")          # evaluate wrote the figure under another name
    with pytest.raises(ValidationError, match="rouge_l") as err:
        _register(store, renamed)
    assert "rougeL" in str(err.value)
    judged_without_faithfulness = measured_against(1)   # ragas ran (judged_questions), one of its figures is gone
    judged_without_faithfulness["rag"] = RAG | {"judged_questions": 2}
    with pytest.raises(ValidationError, match="LLM-judged on 2 questions but .*faithfulness"):
        _register(store, judged_without_faithfulness)
    assert int(MlflowClient().get_model_version_by_alias("m", "champion").version) == 1   # nothing registered


def test_a_version_keeps_what_the_next_round_continues_and_checks_and_the_report_shows_the_round(store, base_model_dir,
                                                                                       untrained_adapter):
    from tasks import tracking
    from tasks.evaluate.evaluate import champion_held_out
    from tasks.paths import Paths
    from tasks.train.init_from import champion_start

    stages = store / Paths.stage_results
    stages.mkdir(parents=True)
    (stages / "ingest.json").write_text(json.dumps({"by_source": {
        "sharegpt": {"rows_kept": 900}, "rounds": {"rows_kept": 29, "feedback": {"corrected": 25, "liked": 4,
                                                                                  "disliked": 3}}}}))
    (stages / "sft.json").write_text(json.dumps({"init_from": "champion v1"}))
    assert champion_start("m", base_model=base_model_dir, cache=store / "cache") is None   # round one: the base
    (store / "metrics.json").write_text(json.dumps(GOOD))
    held_out = store / "sft_test.jsonl"
    held_out.write_text(json.dumps({"id": "t1", "messages": [{"role": "user", "content": "Hi"}]}) + "\n")
    with mlflow.start_run():
        register(configured("gates"), "m", store / "model", *(store / name for name in (
            "metrics.json", "quantize.json", "smoke_test.json", "registration.json", "report.md", "vs_champion.png")),
            adapter=untrained_adapter, base_model=base_model_dir, held_out=held_out)
    start = champion_start("m", base_model=base_model_dir, cache=store / "cache")
    assert start.version == 1 and (start.adapter / "adapter_model.safetensors").read_bytes() == \
        (untrained_adapter / "adapter_model.safetensors").read_bytes()
    assert champion_held_out(tracking.champion("m")) == [json.loads(held_out.read_text())]   # the forgetting rows
    assert ("Feedback from serving (`rounds`): 25 corrected, 4 liked, 3 disliked; 29 became training conversations"
            in (store / "report.md").read_text())
    assert "SFT started from champion v1" in (store / "report.md").read_text()
