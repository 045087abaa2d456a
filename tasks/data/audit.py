"""The clean stage's exclusion file (datatrove-style) and the counts the report takes from it.

One line per dropped or modified row: its id, the stage and the reason, and the figures behind them (counts and
scores, never raw text). Drops are counted by source and reason too, for the report's counts by source: nothing
is kept per row, so the driver's memory does not grow with the corpus.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import TextIO


class Audit:
    def __init__(self, f: TextIO):
        self.f, self.dropped, self.pii, self.rows_scrubbed, self.rows_trimmed = f, Counter(), Counter(), 0, 0
        self.by_source: dict[str, Counter] = {}

    def drop(self, row_id: str, source: str, stage: str, reason: str, **detail) -> None:
        self.dropped[reason] += 1
        self.by_source.setdefault(source, Counter())[reason] += 1
        self._write(row_id, "dropped", stage, reason, detail)

    def trimmed(self, row_id: str, turns: int) -> None:
        self.rows_trimmed += 1
        self._write(row_id, "modified", "quality", "leading_replies_trimmed", {"turns": turns})

    def scrubbed(self, row_id: str, pii: dict) -> None:
        self.rows_scrubbed += 1
        self.pii.update(pii)
        self._write(row_id, "modified", "pii", "pii_scrubbed", {"pii": pii})

    def _write(self, row_id: str, action: str, stage: str, reason: str, detail: dict) -> None:
        self.f.write(json.dumps({"id": row_id, "action": action, "stage": stage, "reason": reason, **detail}) + "\n")
