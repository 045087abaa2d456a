"""Stage 3: quality filters -> exact dedup -> MinHash-LSH near-dedup -> PII scrubbing, with an audit trail.

Order is cheapest-first so the costly steps see fewer rows; PII runs last on survivors only. Every dropped row and
every modified row is written to the audit file with its stage and reason (ids and counts only, never raw text), and
the report's counts reconcile exactly: rows_in = rows_kept + sum(dropped_by_reason).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from tasks import dedup, plots
from tasks.config import CleanConfig, Paths
from tasks.jsonl import atomic_writer, read_jsonl, write_json, write_jsonl
from tasks.minhash import find_near_duplicates
from tasks.pii import Scrubber
from tasks.quality import quality_reason


def conversation_text(messages: list[dict]) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def clean(cfg: CleanConfig, src: Path = Paths.ingested, out: Path = Paths.clean, audit: Path = Paths.audit,
          report: Path = Paths.clean_report, report_md: Path = Paths.clean_report_md,
          plots_dir: Path = Paths.clean_plots) -> dict:
    rows = list(read_jsonl(src))
    dropped: Counter = Counter()
    with atomic_writer(audit) as log:
        def drop(row: dict, stage: str, reason: str, **detail) -> None:
            dropped[reason] += 1
            log.write(json.dumps({"id": row["id"], "action": "dropped", "stage": stage, "reason": reason, **detail})
                      + "\n")

        survivors = []
        for row in rows:
            reason = quality_reason(row["messages"], cfg)
            if reason:
                drop(row, "quality", reason)
            else:
                survivors.append(row)

        first_seen: dict[str, str] = {}
        unique, texts = [], []
        for row in survivors:
            text = conversation_text(row["messages"])
            fp = dedup.fingerprint(text)
            if fp in first_seen:
                drop(row, "exact_dedup", "exact_duplicate", duplicate_of=first_seen[fp])
            else:
                first_seen[fp] = row["id"]
                unique.append(row)
                texts.append(text)

        near = find_near_duplicates(texts, cfg.near_dedup_threshold, cfg.num_perm, cfg.shingle_words)
        for index, kept_index, sim in near.drop:
            drop(unique[index], "near_dedup", "near_duplicate", duplicate_of=unique[kept_index]["id"],
                 jaccard=round(sim, 4))
        near_idx = {index for index, _, _ in near.drop}
        kept = [r for i, r in enumerate(unique) if i not in near_idx]

        scrubber, pii_counts, rows_scrubbed = Scrubber(cfg.pii, cfg.phone_regions), Counter(), 0
        for row in tqdm(kept, desc="pii", unit="conv"):
            row_counts: Counter = Counter()
            for m in row["messages"]:
                m["content"], found = scrubber.scrub(m["content"])
                row_counts += found
            if row_counts:
                rows_scrubbed += 1
                pii_counts += row_counts
                log.write(json.dumps({"id": row["id"], "action": "modified", "stage": "pii",
                                      "reason": "pii_scrubbed", "pii": dict(row_counts)}) + "\n")
    write_jsonl(out, kept)

    counts = {"rows_in": len(rows), "rows_kept": len(kept), "rows_dropped": sum(dropped.values()),
              "dropped_by_reason": dict(dropped), "rows_pii_scrubbed": rows_scrubbed,
              "pii_by_type": dict(pii_counts), "near_dup_candidate_pairs": len(near.candidate_jaccards)}
    if counts["rows_in"] != counts["rows_kept"] + counts["rows_dropped"]:
        raise AssertionError(f"clean counts do not reconcile: {counts}")
    write_json(report, counts)
    plots.histogram(near.candidate_jaccards, plots_dir / "jaccard_candidates.png",
                    "Verified Jaccard of LSH candidate pairs", "Jaccard similarity", cfg.near_dedup_threshold)
    plots.bars(dict(pii_counts), plots_dir / "pii_by_type.png", "PII replaced, by type")
    report_md.write_text(_markdown(counts))
    return counts


def _markdown(c: dict) -> str:
    lines = ["# Cleaning report", "", f"- rows in: **{c['rows_in']}**", f"- rows kept: **{c['rows_kept']}**",
             f"- rows dropped: **{c['rows_dropped']}**", "", "| dropped because | rows |", "|---|---:|"]
    lines += [f"| {reason} | {n} |" for reason, n in sorted(c["dropped_by_reason"].items())]
    lines += ["", f"PII scrubbed in {c['rows_pii_scrubbed']} kept conversations:", "", "| type | replaced |",
              "|---|---:|"]
    lines += [f"| {kind} | {n} |" for kind, n in sorted(c["pii_by_type"].items())]
    lines += ["", f"Near-dedup: {c['near_dup_candidate_pairs']} LSH candidate pairs verified by exact Jaccard.", ""]
    return "\n".join(lines)
