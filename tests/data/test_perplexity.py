"""The perplexity filter with the real base model: garbled replies score far above fluent ones, the clean stage drops
the tail with reason and score in the audit, its counts reconcile, and the score histogram is drawn."""
import random

from tasks.common.jsonl import read_jsonl, write_jsonl
from tasks.data.filters.perplexity import cutoff, reply_perplexities
from tests.conftest import configured, conversation

FLUENT = [("How do I make a cup of tea?", "Boil fresh water, pour it over the tea bag, wait three minutes, then "
           "remove the bag and add milk if you like."),
          ("What is the capital of France?", "The capital of France is Paris, which is also its largest city."),
          ("Why is the sky blue?", "Sunlight is scattered by the molecules in the air, and blue light is scattered "
           "much more than red light, so the sky looks blue."),
          ("How many days are in a leap year?", "A leap year has 366 days: February gets a 29th day.")]


def garbled(seed: int) -> str:
    rng = random.Random(seed)
    return " ".join("".join(rng.choice("qxzjkvwpfgh") for _ in range(rng.randint(3, 9))) for _ in range(25))


def test_garbled_replies_score_far_above_fluent_ones_and_the_cutoff_is_the_percentile(base_model_dir):
    cfg = configured("clean.perplexity", model=str(base_model_dir), batch_size=3)
    rows = [conversation(q, a, str(i))["messages"] for i, (q, a) in enumerate(FLUENT)]
    rows.append(conversation("Tell me something.", garbled(0), "g")["messages"])
    scores = reply_perplexities(rows, cfg)
    assert max(scores[:-1]) * 5 < scores[-1], scores
    alone = reply_perplexities(rows[:1], cfg)[0]
    assert abs(alone / scores[0] - 1) < 1e-4                     # padding in a batch does not change a score
    assert cutoff([1, 2, 3, 4, 100], configured("clean.perplexity", percentile=80)) == 4
    assert cutoff([1, 2, 3], configured("clean.perplexity", threshold=2.5)) == 2.5


def test_clean_drops_the_high_perplexity_tail_with_its_score(base_model_dir, tmp_path):
    from tasks.data.clean import clean

    rows = [conversation(q, a, f"ok{i}") for i, (q, a) in enumerate(FLUENT)]
    rows += [conversation(f"Please answer question {i}.", garbled(i), f"bad{i}") for i in range(2)]
    write_jsonl(tmp_path / "in.jsonl", rows)
    cfg = configured("clean", filters=["quality", "perplexity"],
                     perplexity={"model": str(base_model_dir), "percentile": 66})
    counts = clean(cfg, tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "audit.jsonl", tmp_path / "r.json",
                   tmp_path / "r.md", tmp_path / "plots", held_out_fraction=0.0)
    assert counts["dropped_by_reason"] == {"high_perplexity": 2}
    assert counts["rows_in"] == counts["rows_kept"] + counts["rows_dropped"] == 6
    audit = [a for a in read_jsonl(tmp_path / "audit.jsonl") if a["action"] == "dropped"]
    assert {a["id"] for a in audit} == {"bad0", "bad1"}
    assert all(a["stage"] == "perplexity" and a["perplexity"] > a["cutoff"] for a in audit)
    assert (tmp_path / "plots" / "perplexity.png").stat().st_size > 0 and "perplexity_cpu_in_scan" in counts["seconds"]
