"""The filter interface: the filters clean.filters lists run in its order, one reason per dropped row, the counts
reconcile; a filter not listed does not run; the config refuses an unknown or repeated name; and a new filter is one
module (here, this test's) and one config section, with clean.py untouched."""
import pytest
from pydantic import ValidationError

from tasks.common.jsonl import read_jsonl, write_jsonl
from tasks.config import CleanConfig
from tasks.config.data import FilterSection
from tasks.data.clean import clean
from tasks.data.filters import FILTERS, chain
from tasks.data.filters.base import CorpusFilter, Drop, Filter
from tests.conftest import configured, conversation
from tests.data.test_clean import INLINE, run_clean

FINE = [conversation("How do I speed up a slow SQL query?", "Add an index on the filtered column, then read the plan.",
                     "ok0"),
        conversation("What is the capital of Japan?", "Tokyo has been the capital of Japan since 1868.", "ok1")]
SHORT_AND_TOXIC = conversation("hi", "fuck you", "both")         # 10 characters: too_short; and on the blocklist
TOXIC = conversation("Can you help me with my homework please?", "Do your own homework, you fucking idiot.", "toxic")


def dropped(entries: list[dict]) -> dict[str, tuple[str, str]]:
    return {e["id"]: (e["stage"], e["reason"]) for e in entries if e["action"] == "dropped"}


def test_filters_run_in_config_order_and_each_dropped_row_has_one_reason(tmp_path):
    rows = [*FINE, SHORT_AND_TOXIC, TOXIC]
    counts, kept, entries = run_clean(tmp_path / "a", rows, filters=["quality", "toxicity"])
    assert dropped(entries) == {"both": ("quality", "too_short"), "toxic": ("toxicity", "toxic_blocklist")}
    counts_swapped, kept_swapped, entries = run_clean(tmp_path / "b", rows, filters=["toxicity", "quality"])
    assert dropped(entries) == {"both": ("toxicity", "toxic_blocklist"), "toxic": ("toxicity", "toxic_blocklist")}
    assert set(kept) == set(kept_swapped) == {"ok0", "ok1"}
    for c in (counts, counts_swapped):
        assert c["rows_in"] == c["rows_kept"] + sum(c["dropped_by_reason"].values()) == len(rows)


def test_a_filter_not_listed_does_not_run(tmp_path):
    counts, kept, entries = run_clean(tmp_path, [*FINE, TOXIC], filters=["quality"],
                                      perplexity={"model": str(tmp_path / "no-such-model")})
    assert set(kept) == {"ok0", "ok1", "toxic"} and dropped(entries) == {}
    assert counts["toxicity"] == "off" and set(counts["seconds"]) >= {"quality_cpu_in_scan"}
    assert not {"toxicity_cpu_in_scan", "perplexity_cpu_in_scan"} & set(counts["seconds"])


@pytest.mark.parametrize("names, message", [(["quality", "profanity"], "unknown filter profanity"),
                                            (["toxicity", "quality", "toxicity"], "toxicity listed more than once"),
                                            (["near_dedup"], "unknown filter near_dedup")])
def test_the_config_refuses_an_unknown_or_repeated_filter(names, message):
    with pytest.raises(ValidationError, match=message):
        configured("clean", filters=names)


def test_the_list_is_the_one_switch_so_an_empty_language_list_is_refused():
    with pytest.raises(ValidationError, match="languages"):
        configured("clean.language", languages=[])


def test_every_filter_section_has_a_filter_and_every_filter_a_section():
    sections = {name for name, field in CleanConfig.model_fields.items()
                if isinstance(field.annotation, type) and issubclass(field.annotation, FilterSection)}
    assert sections == set(FILTERS) == {"quality", "language", "toxicity", "perplexity"}
    assert all(f.name == name for name, f in FILTERS.items())


class _Scores(CorpusFilter):
    """Scores a row by its number of messages; drops the scores above 1."""
    name = "scores"

    def score_batch(self, conversations):
        return [float(len(m)) for m in conversations]

    def judge(self, scores):
        return [Drop("high_score", {"score": s}) if s > 1 else None for s in scores]

    def plot(self, scores, path):
        raise AssertionError("not drawn here")


class _Marks(Filter):
    name = "marks"

    def filter(self, messages):
        return Drop("marked", {}) if messages[0]["content"] == "x" else None


def test_a_corpus_filter_decides_after_the_scan_and_keeps_its_place_in_the_order():
    """A row both filters drop belongs to the first in config order, though the corpus filter decides only once every
    chunk is scanned; the rows it scores go on to the next filter meanwhile."""
    long, short = [{"content": "x"}, {"content": "y"}], [{"content": "x"}]
    chunks = [(["a", "b"], [long, short]), (["c"], [[{"content": "z"}, {"content": "z"}]])]
    for order, a_reason in [((_Scores(None), _Marks(None)), "high_score"), ((_Marks(None), _Scores(None)), "marked")]:
        verdicts = [chain.run(list(order), ids, conversations) for ids, conversations in chunks]
        settled, scores = chain.settle(list(order), verdicts)
        assert [[(i, f, d.reason) for i, f, d in chunk] for chunk in settled] == [
            [("a", "scores" if a_reason == "high_score" else "marks", a_reason), ("b", "marks", "marked")],
            [("c", "scores", "high_score")]]
    assert scores == {"scores": [2.0]}            # marks ran first: "a" and "b" were never scored


class ShoutingConfig(FilterSection):
    max_upper_fraction: float


class CleanWithShouting(CleanConfig):
    shouting: ShoutingConfig                  # the new filter's section: clean.shouting


class Shouting(Filter):
    """The whole of a new filter: replies mostly in capitals are dropped, with the fraction in the audit."""
    name = "shouting"

    def filter(self, messages):
        letters = [c for m in messages if m["role"] == "assistant" for c in m["content"] if c.isalpha()]
        upper = sum(c.isupper() for c in letters) / max(len(letters), 1)
        return Drop("shouting", {"upper_fraction": round(upper, 2)}) if upper > self.cfg.max_upper_fraction else None


@pytest.mark.parametrize("workers", [1, 2], ids=["inline", "processes"])
def test_a_new_filter_is_one_module_and_one_config_section(tmp_path, monkeypatch, workers):
    monkeypatch.setitem(FILTERS, "shouting", Shouting)
    shout = conversation("Is it safe to eat raw cookie dough?", "NO. RAW FLOUR AND RAW EGGS CAN CARRY BACTERIA.", "loud")
    src = tmp_path / "in.jsonl"
    write_jsonl(src, [*FINE, shout, TOXIC])
    raw = {**configured("clean", **INLINE).model_dump(), "filters": ["quality", "shouting", "toxicity"],
           "shouting": {"max_upper_fraction": 0.5}}
    raw["executor"]["workers"] = workers
    with pytest.raises(ValidationError, match="unknown filter shouting"):
        CleanConfig.model_validate(raw)               # without its section it is not a filter
    counts = clean(CleanWithShouting.model_validate(raw), src, tmp_path / "out.jsonl", tmp_path / "audit.jsonl",
                   tmp_path / "r.json", tmp_path / "r.md", tmp_path / "plots", held_out_fraction=0.0)
    entries = list(read_jsonl(tmp_path / "audit.jsonl"))
    assert dropped(entries) == {"loud": ("shouting", "shouting"), "toxic": ("toxicity", "toxic_blocklist")}
    assert [e["upper_fraction"] for e in entries if e["id"] == "loud"] == [1.0]
    assert counts["rows_in"] == counts["rows_kept"] + counts["rows_dropped"] == 4
    assert "shouting_cpu_in_scan" in counts["seconds"]
