"""What a cleaning filter is (datatrove's `filter(doc)` shape, over a batch): a name and a verdict per conversation.

A `Filter` decides each row in the scan, one chunk at a time: None keeps the row, a `Drop` drops it with a reason and
the figures behind it (scores, never text). It implements `filter` (one conversation) or, when a call costs as much as
its rows (a classifier, a model), `filter_batch`. A `CorpusFilter` cannot decide alone, because its cutoff depends on
the whole corpus (a percentile): the scan only scores rows (`score_batch`), and once it is over the driver hands every
score to `judge`. Either way `name` is the filter's audit stage, its section of params.yaml (`clean.<name>`) and its
name in `clean.filters`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, NamedTuple


class Drop(NamedTuple):
    reason: str     # the audit's reason and the report's dropped_by_reason key
    detail: dict    # written to the audit beside it: scores and counts, never raw text


class Filter:
    """Decides in the scan. Implement `filter` or `filter_batch` (each defaults to the other)."""
    name: ClassVar[str]

    def __init__(self, cfg):
        self.cfg = cfg       # the filter's section, clean.<name>

    def filter(self, messages: list[dict]) -> Drop | None:
        return self.filter_batch([messages])[0]

    def filter_batch(self, conversations: list[list[dict]]) -> list[Drop | None]:
        return [self.filter(messages) for messages in conversations]


class CorpusFilter(ABC):
    """Scores in the scan; decides after it, from every score at once (`judge`: the verdicts in the scores' order)."""
    name: ClassVar[str]

    def __init__(self, cfg):
        self.cfg = cfg

    @abstractmethod
    def score_batch(self, conversations: list[list[dict]]) -> list[float]: ...

    @abstractmethod
    def judge(self, scores: list[float]) -> list[Drop | None]: ...

    @abstractmethod
    def plot(self, scores: list[float], path: Path) -> None:
        """The scores' histogram for the clean report: where the cutoff fell."""
