"""benchmarks/scale.py at its CI size: 1x and 4x of 1,500 real ShareGPT conversations, each size cleaned in its own
process on 2 workers. The ciphered copies must not read as duplicates of each other (precision), the planted ones
must all be found (recall), and the table, the growth figures and the plot must be written."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]



def test_scale_benchmark_finds_every_planted_duplicate_and_nothing_else(tmp_path):
    results = tmp_path / "scale"
    done = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--base-rows", "1500", "--sizes", "1", "4",
                           "--work", str(tmp_path / "work"), "--results", str(results)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(results.with_suffix(".json").read_text())
    one, four = figures["sizes"]
    assert four["rows"] > 3.9 * one["rows"]                     # 4 copies and their planted rows
    for size in (one, four):
        assert size["planted"] > 20 and size["recall"] == 1.0, size
        assert size["precision"] == 1.0, size                    # no copy of a row read as a duplicate of another
        assert size["driver_peak_mb"] > 0 and size["worker_peak_mb"] > 0 and len(size["workers"]) == 2
        assert set(size["seconds"]) >= {"scan", "exact_dedup", "lsh_candidates", "near_dedup", "decontaminate_pii"}
    assert four["duplicate_drops"] > 3 * one["duplicate_drops"]
    assert set(figures["growth"]) >= {"time_exponent", "driver_memory_exponent"}
    assert results.with_suffix(".png").stat().st_size > 0 and "| 4x |" in results.with_suffix(".md").read_text()
    assert not list((tmp_path / "work").glob("corpus-*")), "the corpora are removed once measured"
