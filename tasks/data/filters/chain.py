"""Filters in config order: `run` in the scan, on one chunk; `settle` in the driver, once every chunk is scanned.

A row a filter drops is not shown to the filters after it, so each dropped row has exactly one reason and the clean
report's counts reconcile. A corpus filter only scores in the scan: the rows it scores go on to the next filters, and
`settle` gives a row to the first filter in config order that drops it, so the order holds for it too.
"""
from __future__ import annotations

import time
from typing import NamedTuple

from tasks.data.filters.base import CorpusFilter, Drop, Filter


class Verdicts(NamedTuple):
    """What the filters said about one chunk, as the scan returns it to the driver."""
    dropped: dict[str, list[tuple[str, Drop]]]   # by filter: (row id, drop) for the rows it dropped, in row order
    scored: dict[str, list[tuple[str, float]]]   # by corpus filter: (row id, score) for the rows it scored
    kept: list[int]                              # positions of the rows no filter dropped in the scan
    seconds: dict[str, float]                    # by filter: time spent on this chunk


def run(filters: list[Filter | CorpusFilter], ids: list[str], conversations: list[list[dict]]) -> Verdicts:
    """Each filter on the rows the filters before it kept, one batch call each (a classifier or a model costs per
    call as much as per row)."""
    alive, dropped, scored, seconds = list(range(len(ids))), {}, {}, {}
    for f in filters:
        clock = time.perf_counter()
        batch = [conversations[i] for i in alive]
        if isinstance(f, CorpusFilter):
            scored[f.name] = [(ids[i], score) for i, score in zip(alive, f.score_batch(batch))]
        else:
            verdicts = f.filter_batch(batch)
            dropped[f.name] = [(ids[i], drop) for i, drop in zip(alive, verdicts) if drop]
            alive = [i for i, drop in zip(alive, verdicts) if not drop]
        seconds[f.name] = time.perf_counter() - clock
    return Verdicts(dropped, scored, alive, seconds)


def settle(filters: list[Filter | CorpusFilter], chunks: list[Verdicts]
           ) -> tuple[list[list[tuple[str, str, Drop]]], dict[str, list[float]]]:
    """Per chunk, its dropped rows as (row id, filter name, drop): filters in config order, rows in corpus order, each
    row once, by the first filter that drops it. The corpus filters judge here, from every score of the scan; their
    scores (by filter name) come back too, for the report."""
    scores, judged = {}, {}
    for f in filters:
        if isinstance(f, CorpusFilter):
            scores[f.name] = [score for chunk in chunks for _, score in chunk.scored[f.name]]
            judged[f.name] = iter(f.judge(scores[f.name]))    # consumed below in the same order: chunk, then row
    settled = []
    for chunk in chunks:
        claimed, drops = set(), []
        for f in filters:
            found = ([(row_id, next(judged[f.name])) for row_id, _ in chunk.scored[f.name]] if f.name in judged
                     else chunk.dropped[f.name])
            for row_id, drop in found:
                if drop and row_id not in claimed:
                    claimed.add(row_id)
                    drops.append((row_id, f.name, drop))
        settled.append(drops)
    return settled, scores
