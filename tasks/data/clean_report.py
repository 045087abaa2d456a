"""The clean stage's report: report.json (its numbers, checked to reconcile), report.md and the plots."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from tasks.common import plots
from tasks.common.jsonl import write_json
from tasks.config import CleanConfig
from tasks.data.audit import Audit
from tasks.data.filters.base import CorpusFilter, Filter
from tasks.data.filters.toxicity import described
from tasks.data.minhash import NearDupResult


def summary(cfg: CleanConfig, log: Audit, near: NearDupResult, *, rows_in: Counter, kept: Counter,
            eval_examples: int, chunks: int, seconds: dict[str, float], cpu_seconds: dict[str, float],
            processes: dict[str, dict]) -> dict:
    """report.json's numbers, from the rows read and kept by source; raises unless rows_in = rows_kept +
    sum(dropped_by_reason), in all and for each source."""
    counts = {"rows_in": rows_in.total(), "rows_kept": kept.total(), "rows_dropped": sum(log.dropped.values()),
              "dropped_by_reason": dict(log.dropped), "rows_leading_replies_trimmed": log.rows_trimmed,
              "rows_pii_scrubbed": log.rows_scrubbed,
              "pii_by_type": dict(log.pii), "near_dup_candidate_pairs": len(near.candidate_jaccards),
              "near_dup_clusters": len(near.cluster_sizes), "decontamination_eval_examples": eval_examples,
              "toxicity": described(cfg.toxicity) if "toxicity" in cfg.filters else "off",
              "executor": f"{cfg.executor.kind} x{cfg.executor.workers}", "chunks": chunks,
              "seconds": {k: round(v, 2) for k, v in seconds.items()}, "cpu_seconds": {k: round(v, 2) for k, v in cpu_seconds.items()},
              "processes": processes,
              "by_source": by_source(rows_in, log.by_source, kept)}
    if counts["rows_in"] != counts["rows_kept"] + counts["rows_dropped"]:
        raise AssertionError(f"clean counts do not reconcile: {counts}")
    return counts


def by_source(rows_in: Counter, drops: dict[str, Counter], kept: Counter) -> dict[str, dict]:
    """Each source's rows_in, rows_kept, rows_dropped and dropped_by_reason, in corpus order, from the rows read, the
    drops by source and reason, and the rows written; raises unless each reconciles."""
    reasons = {name: drops.get(name, Counter()) for name in rows_in}
    counts = {name: {"rows_in": rows_in[name], "rows_kept": kept[name], "rows_dropped": reasons[name].total(),
                     "dropped_by_reason": dict(reasons[name])} for name in rows_in}
    for name, part in counts.items():
        if part["rows_in"] != part["rows_kept"] + part["rows_dropped"]:
            raise AssertionError(f"clean counts of source {name} do not reconcile: {part}")
    return counts


def write(counts: dict, cfg: CleanConfig, near: NearDupResult, filters: list[Filter | CorpusFilter],
          scores: dict[str, list[float]], report: Path, report_md: Path, plots_dir: Path) -> None:
    """report.json, the plots (each corpus filter draws its scores), report.md."""
    write_json(report, counts)
    plots.histogram(near.candidate_jaccards, plots_dir / "jaccard_candidates.png",
                    "Verified Jaccard of LSH candidate pairs", "Jaccard similarity", cfg.near_dedup.threshold)
    plots.bars({str(size): n for size, n in sorted(Counter(near.cluster_sizes).items())},
               plots_dir / "cluster_sizes.png", "Near-duplicate clusters by size (members)", "clusters")
    for f in filters:
        if isinstance(f, CorpusFilter):
            f.plot(scores[f.name], plots_dir / f"{f.name}.png")
    plots.bars(counts["pii_by_type"], plots_dir / "pii_by_type.png", "PII replaced, by type")
    plots.bars(counts["dropped_by_reason"], plots_dir / "dropped_by_reason.png", "Rows dropped, by reason", "rows")
    report_md.write_text(_markdown(counts, cfg.filters))


def _markdown(c: dict, filters: list[str]) -> str:
    lines = ["# Cleaning report", "", f"- rows in: **{c['rows_in']}**", f"- rows kept: **{c['rows_kept']}**",
             f"- rows dropped: **{c['rows_dropped']}**", "", "| dropped because | rows |", "|---|---:|"]
    lines += [f"| {reason} | {n} |" for reason, n in sorted(c["dropped_by_reason"].items())]
    if len(c["by_source"]) > 1:
        lines += ["", "| source | rows in | kept | dropped | dropped because |", "|---|---:|---:|---:|---|"]
        lines += [f"| {name} | {s['rows_in']} | {s['rows_kept']} | {s['rows_dropped']} | "
                  + ", ".join(f"{reason} {n}" for reason, n in sorted(s["dropped_by_reason"].items())) + " |"
                  for name, s in c["by_source"].items()]
    lines += ["", f"Filters, in order: {', '.join(filters) or 'none'}. Toxicity filter: {c['toxicity']}."]
    lines += ["", f"Leading replies trimmed (chunk opened mid-answer) in {c['rows_leading_replies_trimmed']} rows.",
              "", f"PII scrubbed in {c['rows_pii_scrubbed']} kept conversations:", "", "| type | replaced |",
              "|---|---:|"]
    lines += [f"| {kind} | {n} |" for kind, n in sorted(c["pii_by_type"].items())]
    lines += ["", (f"Near-dedup: {c['near_dup_candidate_pairs']} LSH candidate pairs verified by exact Jaccard, "
                   f"{c['near_dup_clusters']} clusters."),
              f"Decontamination against {c['decontamination_eval_examples']} evaluation examples.",
              f"Ran on {c['executor']} in {c['chunks']} chunks: "
              + ", ".join(f"{k} {v} s" for k, v in c["seconds"].items()) + " (wall); "
              + ", ".join(f"{k} {v} s" for k, v in c["cpu_seconds"].items()) + " (CPU, all processes).",
              "Peak memory: " + ", ".join(f"{name} {p['peak_rss_mb']} MB" for name, p in c["processes"].items()) + ".",
              ""]
    return "\n".join(lines)
