"""One schema for what evaluate measures: the figures the gates, report, lineage, registry tags and the parent run's
headline name exist in it, and a result without a figure its params asked for is refused."""
import pytest

from tasks import tracking
from tasks.evaluate.figures import (
    ABSENT,
    FIGURES,
    HEADLINE,
    Evaluation,
    Figure,
    MissingFigure,
    check_table,
    lookup,
)
from tasks.stages import BY_NAME
from tests.conftest import configured
from tests.release.conftest import GOOD, champion_of


def test_a_figure_the_schema_does_not_have_fails_the_table_check():
    check_table()
    with pytest.raises(MissingFigure, match="'ppl.serve' is not in the Evaluation schema"):
        check_table((*FIGURES, Figure("ppl.serve", "served ppl", "lower")))
    with pytest.raises(MissingFigure, match="compared with the champion"):
        check_table((Figure("ppl.dpo", "DPO ppl", "lower", "max_ppl_ratio"),))   # the champion has no DPO ppl
    with pytest.raises(MissingFigure, match="gates.vs_champion has no 'max_ppl'"):
        check_table((Figure("ppl.served", "served ppl", "lower", "max_ppl"),))


def test_the_evaluate_stage_headline_is_the_schema_s():
    assert BY_NAME["evaluate"].headline == (*HEADLINE, "duration_s")
    ev = Evaluation.model_validate(GOOD)
    figures = tracking.headline(ev.model_dump() | {"duration_s": 1.0}, BY_NAME["evaluate"].headline, "evaluate")
    assert figures["ppl.served"] == 9.5 and "judge.win_rate" not in figures   # no judge this run: left out
    with pytest.raises(KeyError, match="'rouge_l' is not in its results"):
        tracking.headline({k: v for k, v in ev.model_dump().items() if k != "rouge_l"}, HEADLINE, "evaluate")


def test_lookup_tells_not_measured_from_no_score():
    ev = Evaluation.model_validate(GOOD | {"champion": champion_of(1)})
    assert lookup(ev, "judge.win_rate") is ABSENT                 # the judge was off
    assert lookup(ev, "rag.faithfulness") is ABSENT               # ragas' LLM-judged metrics were off
    assert lookup(ev.champion, "ppl.served") == 9.5
    nan = Evaluation.model_validate(GOOD | {"rag": GOOD["rag"] | {"semantic_similarity": None}})
    assert lookup(nan, "rag.semantic_similarity") is None         # measured, no row scored
    with pytest.raises(MissingFigure):
        lookup(ev, "serving.ttft_p50")


def test_a_section_the_params_asked_for_must_be_there_and_one_they_did_not_must_not():
    ev = Evaluation.model_validate(GOOD)
    off = configured("evaluate", judge={"size": 0, "calibration_size": 0, "ragas_size": 0})
    assert ev.check_measured(off, canaries_planted=0) is ev
    with pytest.raises(MissingFigure, match="canaries missing"):
        ev.check_measured(off, canaries_planted=8)
    with pytest.raises(MissingFigure, match="judge missing"):
        ev.check_measured(configured("evaluate"), canaries_planted=0)
