"""How the clean stage's cost grows with the corpus: 1x, 4x, 16x and 64x the embedded ShareGPT corpus (~1.1M rows).

A k-times corpus is k copies of the real one, each copy but the first put through its own character cipher: letters
(Latin, Cyrillic, kana, hangul, CJK ideographs, in sync across case) and digits permuted by a seeded bijection. A
cipher keeps every length, word shape, line and repetition of a row, so the quality filters' statistics and the
duplicates within a copy are as in the original, while two copies of a row share almost no shingle: copies are
neither exact nor near duplicates of each other. (The toxicity classifier and the PII patterns see ciphered words,
so their drops do not grow with k: the table shows drops by reason.) Duplicates are then planted at a known rate in
every copy, after its rows: exact copies, and near copies with one word of a 200-word-or-longer row replaced by
another of its length (Jaccard >= 0.95). Checked at every size:
- recall: planted rows dropped as duplicates / planted rows no filter dropped;
- precision: the duplicate drops whose kept twin is in the same copy, over all (a row read as a duplicate of a row
  of another copy would be a false one: every drop is verified by exact Jaccard, so this is what could go wrong).
Each size is cleaned in its own process (`--one`), so the driver's peak RSS is that run's; the clean report gives
wall and CPU seconds per step and every worker's peak RSS. Growth exponents are the least-squares slopes of log time
and log driver memory against log rows.

    .venv/bin/python -m benchmarks.scale                       # 1 4 16 64, ~45 min on 2 cores, ~17 GB of disk
    .venv/bin/python -m benchmarks.scale --base-rows 1500 --sizes 1 4 --workers 2    # the CI size (~1 min)
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tasks.common import plots
from tasks.common.hardware import hardware_tags
from tasks.common.jsonl import read_jsonl, write_json
from tasks.paths import Paths

ROOT = Path(__file__).resolve().parents[1]
PLANT_RATE = 0.01          # of each copy's rows, per kind (exact, near)
NEAR_MIN_WORDS = 200
# (lowercase block, uppercase block or None): each permuted as one, upper following lower
_ALPHABETS = [("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"), ("0123456789", None),
              ("".join(map(chr, range(0x430, 0x450))), "".join(map(chr, range(0x410, 0x430)))),
              ("".join(map(chr, range(0x3041, 0x3097))), None), ("".join(map(chr, range(0x30A1, 0x30FB))), None),
              ("".join(map(chr, range(0x4E00, 0xA000))), None), ("".join(map(chr, range(0xAC00, 0xD7A4))), None)]
_WORD = re.compile(r"\b[A-Za-z]+\b")


def cipher(copy: int) -> dict[int, int]:
    """Copy `copy`'s str.translate table (copy 0: the original text)."""
    rng, table = random.Random(copy), {}
    for lower, upper in _ALPHABETS if copy else []:
        shuffled = list(lower)
        rng.shuffle(shuffled)
        table.update(zip(map(ord, lower), map(ord, shuffled)))
        if upper:
            table.update(zip(map(ord, upper), (ord(c.upper()) for c in shuffled)))
    return table


def _near_copy(row: dict) -> dict | None:
    """The row with one word of its longest message replaced by another of the same length, or None if the row is
    shorter than NEAR_MIN_WORDS words (one changed word then keeps Jaccard of 5-gram shingles >= 0.95)."""
    if sum(len(m["content"].split()) for m in row["messages"]) < NEAR_MIN_WORDS:
        return None
    longest = max(range(len(row["messages"])), key=lambda i: len(row["messages"][i]["content"]))
    text = row["messages"][longest]["content"]
    words = list(_WORD.finditer(text))
    if not words:
        return None
    w = words[len(words) // 2]
    swap = "".join("q" if ch != "q" else "z" for ch in w.group())
    messages = [dict(m) for m in row["messages"]]
    messages[longest]["content"] = text[:w.start()] + swap + text[w.end():]
    return {**row, "messages": messages}


def build(base: list[dict], k: int, path: Path) -> dict[str, str]:
    """The k-times corpus at `path`; returns {planted id: kind}."""
    planted = {}
    with open(path, "w", encoding="utf-8") as f:
        for copy in range(k):
            table, rng = cipher(copy), random.Random(10_000 + copy)
            rows = [{**row, "id": f"x{copy}/{row['id']}",
                     "messages": [{**m, "content": m["content"].translate(table)} for m in row["messages"]]}
                    for row in base]
            each = int(PLANT_RATE * len(rows))
            plants = [({**rows[i], "id": f"x{copy}/exact/{i}"}, "exact") for i in rng.sample(range(len(rows)), each)]
            near = ((i, _near_copy(rows[i])) for i in rng.sample(range(len(rows)), len(rows)))
            plants += [({**row, "id": f"x{copy}/near/{i}"}, "near")
                       for i, row in itertools.islice(((i, row) for i, row in near if row), each)]
            for row in rows + [p for p, _ in plants]:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            planted.update({p["id"]: kind for p, kind in plants})
    return planted


def run_one(corpus: Path, out: Path, workers: int) -> dict:
    """Clean `corpus` in this process (the driver) with the embedded default's settings but the executor's size."""
    from tasks.config import load_config
    from tasks.data.clean import clean

    cfg = load_config(ROOT / "params.yaml")
    clean_cfg = cfg.clean.model_copy(update={"executor": cfg.clean.executor.model_copy(update={"workers": workers})})
    return clean(clean_cfg, corpus, out / "clean.jsonl", out / "audit.jsonl", out / "report.json",
                 out / "report.md", out / "plots", held_out_fraction=cfg.datasets.test_fraction)


def check(audit: Path, planted: dict[str, str]) -> dict:
    """Recall: planted rows dropped as duplicates, of those no filter dropped. Precision: duplicate drops whose kept
    twin is in the same copy, of all (a copy of the corpus read as a duplicate of another would be a false one)."""
    dups, filtered = {}, set()
    for e in read_jsonl(audit):
        if e["action"] == "dropped":
            if e["stage"] in ("exact_dedup", "near_dedup"):
                dups[e["id"]] = e["duplicate_of"]
            else:
                filtered.add(e["id"])
    live = [p for p in planted if p not in filtered]
    found = sum(p in dups for p in live)
    same_copy = sum(row.split("/", 1)[0] == twin.split("/", 1)[0] for row, twin in dups.items())
    return {"planted": len(live), "planted_found": found, "recall": round(found / max(len(live), 1), 4),
            "duplicate_drops": len(dups), "precision": round(same_copy / max(len(dups), 1), 4)}


def slope(x: list[float], y: list[float]) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0]) if len(x) > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--base-rows", type=int, default=0, help="rows of the embedded corpus to start from; 0 = all")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None, help="where corpora and outputs go (default: temp)")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "scale")
    parser.add_argument("--one", nargs=2, metavar=("CORPUS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        counts = run_one(Path(args.one[0]), Path(args.one[1]), args.workers)
        print("SCALE-RESULT " + json.dumps(counts))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="scale-"))
    base = _base(work, args.base_rows)
    rows = []
    for k in sorted(args.sizes):
        corpus, out = work / f"corpus-{k}x.jsonl", work / f"out-{k}x"
        planted = build(base, k, corpus)
        print(f"{k}x: {corpus.stat().st_size / 2**20:,.0f} MB, cleaning ...", flush=True)
        done = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--workers", str(args.workers), "--one",
                               str(corpus), str(out)], capture_output=True, text=True, cwd=ROOT)
        line = [x for x in done.stdout.splitlines() if x.startswith("SCALE-RESULT ")]
        if done.returncode or not line:
            raise SystemExit(f"{k}x failed:\n{done.stderr[-3000:]}")
        rows.append(_row(k, json.loads(line[0].split(" ", 1)[1]), check(out / "audit.jsonl", planted)))
        corpus.unlink()
        (out / "clean.jsonl").unlink()
        print(json.dumps(rows[-1]), flush=True)
    _report(rows, args.results)


def _base(work: Path, limit: int) -> list[dict]:
    """The embedded corpus as ingest writes it (the pipeline's own file when it is there and complete)."""
    from tasks.config import load_config
    from tasks.data.ingest import ingest

    if not limit and (ROOT / Paths.ingested).exists():
        return list(read_jsonl(ROOT / Paths.ingested))
    cfg = load_config(ROOT / "params.yaml").ingest.model_copy(update={"max_records": limit})
    ingest(cfg, work / "base.jsonl", work / "quarantine.jsonl", work / "ingest.json")
    return list(read_jsonl(work / "base.jsonl"))


def _row(k: int, counts: dict, quality: dict) -> dict:
    workers = {name: p for name, p in counts["processes"].items() if name != "driver"}
    wall = sum(v for step, v in counts["seconds"].items() if not step.endswith("_in_scan"))
    return {"size": f"{k}x", "rows": counts["rows_in"], "wall_s": round(wall, 1),
            "cpu_s": round(sum(counts["cpu_seconds"].values()), 1), "rows_per_s": round(counts["rows_in"] / wall),
            "driver_peak_mb": counts["processes"]["driver"]["peak_rss_mb"],
            "worker_peak_mb": max((p["peak_rss_mb"] for p in workers.values()), default=None),
            "seconds": counts["seconds"], "cpu_seconds": counts["cpu_seconds"], "workers": workers,
            "dropped_by_reason": counts["dropped_by_reason"], "candidate_pairs": counts["near_dup_candidate_pairs"],
            **quality}


def _report(rows: list[dict], results: Path) -> None:
    n = [r["rows"] for r in rows]
    growth = {"time_exponent": round(slope(n, [r["wall_s"] for r in rows]), 3),
              "cpu_exponent": round(slope(n, [r["cpu_s"] for r in rows]), 3),
              "driver_memory_exponent": round(slope(n, [r["driver_peak_mb"] for r in rows]), 3),
              "driver_peak_ratio_largest_to_smallest": round(rows[-1]["driver_peak_mb"] / rows[0]["driver_peak_mb"], 3)}
    write_json(results.with_suffix(".json"), {"sizes": rows, "growth": growth, "cpu": hardware_tags()})
    plots.curves({"wall s": [(r["rows"], r["wall_s"]) for r in rows],
                  "driver peak MB": [(r["rows"], r["driver_peak_mb"]) for r in rows],
                  "largest worker peak MB": [(r["rows"], r["worker_peak_mb"] or 0) for r in rows]},
                 results.with_suffix(".png"), "clean: cost against corpus size", "s or MB", "rows in")
    steps = list(rows[-1]["seconds"])
    lines = ["| size | rows | wall s | CPU s | rows/s | driver peak MB | largest worker MB | recall | precision | "
             + " | ".join(f"{s} s" for s in steps) + " |", "|---" * (9 + len(steps)) + "|"]
    lines += [f"| {r['size']} | {r['rows']:,} | {r['wall_s']} | {r['cpu_s']} | {r['rows_per_s']:,} | "
              f"{r['driver_peak_mb']} | {r['worker_peak_mb']} | {r['recall']} | {r['precision']} | "
              + " | ".join(str(r["seconds"].get(s, "")) for s in steps) + " |" for r in rows]
    lines += ["", "Growth exponents (log-log slope against rows): " + ", ".join(f"{k} {v}" for k, v in growth.items())]
    reasons = sorted({reason for r in rows for reason in r["dropped_by_reason"]})
    lines += ["", "| size | " + " | ".join(reasons) + " |", "|---" * (1 + len(reasons)) + "|"]
    lines += [f"| {r['size']} | " + " | ".join(str(r["dropped_by_reason"].get(x, 0)) for x in reasons) + " |"
              for r in rows]
    results.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
