"""The cleaning filters by name: the name in clean.filters, the section clean.<name>, the stage in the audit.

A filter is one module here and one section of params.yaml (a FilterSection in tasks/config/data.py); this registry
imports each module by an import statement, never by a string, because the clean stage's code deps in dvc.yaml are
found by following imports (tasks/common/code_deps.py). The protocol is in base.py, the order of the run in chain.py.
"""
from __future__ import annotations

from tasks.config import CleanConfig
from tasks.data.filters.base import CorpusFilter, Filter
from tasks.data.filters.language import Language
from tasks.data.filters.perplexity import Perplexity
from tasks.data.filters.quality import Quality
from tasks.data.filters.toxicity import Toxicity

FILTERS: dict[str, type[Filter | CorpusFilter]] = {f.name: f for f in (Quality, Language, Toxicity, Perplexity)}


def configured(cfg: CleanConfig) -> list[Filter | CorpusFilter]:
    """The filters clean.filters lists, in its order, each with its own section."""
    return [FILTERS[name](getattr(cfg, name)) for name in cfg.filters]
