"""The data sections of params.yaml: ingest and clean (tasks/data/)."""
from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from tasks.config.section import Count, Fraction, Positive, Section

# The keys that tell a record's shape (tasks/data/ingest_shapes.py): what a source's `columns` may rename.
Column = Literal["messages", "conversations", "instruction", "input", "output", "system", "history", "prompt",
                 "completion", "question", "answer"]


NAME = r"^[\w.-]+$"   # a source's name: a row id's prefix (`<name>/<id>`) and part of MLflow metric names
_FORMAT_SUFFIXES = re.compile(r"(\.(jsonl|json|parquet))?(\.(gz|zst))?$")


class SourceConfig(Section):
    """One entry of `ingest.sources`. Only `path` is required: the other keys have their defaults here, the one
    exception to params.yaml holding every value, because params.yaml cannot hold defaults for the entries a user
    adds (tests/test_config.py allows exactly these)."""
    path: str = Field(min_length=1)            # a file or folder, "sharegpt-package", or a hub dataset (owner/name)
    name: str | None = None                    # None: derived from the path (`label`)
    columns: dict[Column, Annotated[str, Field(min_length=1)]] = {}   # canonical key -> the source's own key
    roles: dict[str, Literal["system", "user", "assistant"]] = {}     # the source's role tags beyond the built-in ones
    weight: float | None = Field(None, gt=0)   # its share of the SFT training set; set on every source or on none
    max_rows: int = Field(0, ge=0)             # records read from it; 0 = all
    system_prompt: str | None = None           # for its conversations without one; None: ingest.system_prompt
    tags: list[str] = []                       # recorded with its counts in the reports
    kind: Literal["records", "feedback"] = "records"   # feedback: `make serve`'s closed rounds (tasks/data/feedback.py)

    @property
    def label(self) -> str:
        """Its name: `name`, else the path's last part less its format and compression suffixes (data/raw/mine.jsonl.gz:
        mine; tatsu-lab/alpaca: alpaca; sharegpt-package: itself)."""
        return self.name or _FORMAT_SUFFIXES.sub("", PurePosixPath(self.path).name)


class IngestConfig(Section):
    sources: list[SourceConfig] = Field(min_length=1)
    max_records: int = Field(ge=0)             # records read from each source, for quick runs; 0 = all
    allow_empty: bool                          # a source with no records is an error unless this is set
    system_prompt: str                         # for conversations without one ("" = none); a source's own overrides it

    @model_validator(mode="after")
    def _names_and_weights(self) -> IngestConfig:
        names = [source.label for source in self.sources]
        if bad := [name for name in names if not re.fullmatch(NAME, name)]:
            raise ValueError(f"source name {bad[0]!r} is not letters, digits, '.', '_' or '-': set its name")
        if repeated := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"more than one source named {', '.join(repeated)}: give each a name of its own "
                             f"(name: ...)")
        weighted = [source.label for source in self.sources if source.weight is not None]
        if 0 < len(weighted) < len(names):
            unweighted = [name for name in names if name not in weighted]
            raise ValueError(f"weight is set on {', '.join(weighted)} but not on {', '.join(unweighted)}: set it on "
                             f"every source, or on none")
        return self


class FilterSection(Section):
    """A cleaning filter's settings (tasks/data/filters/): its field name in CleanConfig is the filter's name, the one
    `clean.filters` lists to run it."""


class QualityConfig(FilterSection):
    """Per-conversation filters (tasks/data/filters/quality.py), Gopher/C4-style; thresholds tuned on chat data, not web
    pages."""
    min_chars: Count                           # whole conversation, after whitespace normalisation
    max_chars: Positive
    require_assistant: bool
    trim_leading_replies: bool                 # start a chunk that opens mid-answer at its first user turn (audited)
    # Gopher statistics, per assistant reply with code blocks removed (replies under 50 words are not judged). Gopher's
    # web-page thresholds drop 25% of ShareGPT (lists, tables, songs people asked for); these drop loops and garble.
    max_symbol_word_ratio: Fraction            # ('#' + '...') per word, headings excluded (Gopher: 0.1)
    max_duplicate_line_fraction: Fraction      # characters in lines that repeat an earlier line (Gopher: 0.3)
    max_top_2gram_fraction: Fraction           # characters covered by the most frequent word 2-gram (Gopher: 0.2)
    max_duplicate_5gram_fraction: Fraction     # characters in repeated word 5-grams (Gopher: 0.15)
    min_mean_word_length: float = Field(ge=0)  # Gopher: 3; maths, chess notation and number tables sit below 3
    max_mean_word_length: float = Field(gt=0)

    @model_validator(mode="after")
    def _ranges_not_empty(self) -> QualityConfig:
        if self.max_chars <= self.min_chars:
            raise ValueError(f"max_chars ({self.max_chars}) must be above min_chars ({self.min_chars}): no row fits")
        if self.max_mean_word_length <= self.min_mean_word_length:
            raise ValueError(f"max_mean_word_length ({self.max_mean_word_length}) must be above min_mean_word_length "
                             f"({self.min_mean_word_length}): no row fits")
        return self


class LanguageConfig(FilterSection):
    """tasks/data/filters/language.py: py3langid on the replies first; a row in another language, or in none it is
    sure of, is dropped."""
    languages: list[Annotated[str, Field(pattern=r"^[a-z]{2}$")]] = Field(min_length=1)  # ISO 639-1 codes to keep (to keep every language, do not list it)
    min_language_score: Fraction               # probability of the detected language below which a row is dropped


class NormaliseConfig(Section):
    """What near-dedup ignores before shingling (tasks/data/dedup.py), as datatrove's TextNormConfig: light edits (a
    comma, a particle's punctuation, a capital, a full-width digit) stop splitting near-duplicates. All on by default:
    of benchmarks/dedup.py's light-edit pairs, all off finds 45% (English) and 58% (Chinese), all on 100% and 99%, at
    precision 1.000. Whitespace is always collapsed: shingles are n-grams of words and of single CJK characters."""
    lowercase: bool                            # Unicode case folding
    punctuation: bool                          # punctuation and symbols (ASCII, CJK, full-width, emoji) become spaces
    digits: bool                               # numbers' digits become 0: 2023-01-05 = 1999-12-31; python3 stays
    width: bool                                # NFKC: full-width letters, digits, punctuation -> ASCII; ligatures split
    diacritics: bool                           # NFKD, then combining accents dropped: café = cafe


class NearDedupConfig(Section):
    threshold: float = Field(gt=0, le=1)       # Jaccard of normalised shingle sets
    num_perm: Positive
    shingle_words: int = Field(ge=1)           # word n-grams
    # Character n-grams in CJK text, where each character is a token. Shorter than 5 because a particle is one
    # character that breaks n shingles: of benchmarks/dedup.py's Chinese light-edit pairs (2-4% of characters edited)
    # 5-grams find 95.4%, 4-grams 99.1%, 3-grams 99.9%, all at precision 1.000; 4 still spans two words or more.
    shingle_cjk_chars: int = Field(ge=1)
    normalise: NormaliseConfig
    keep: Literal["longest", "first"]          # which member of a duplicate cluster survives

    @field_validator("num_perm")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value < 2 or value & (value - 1):
            raise ValueError("num_perm must be a power of two (one-permutation MinHash uses it as its bin count)")
        return value


class DecontaminationConfig(Section):
    """Drop training rows that contain an evaluation example's n-grams (tasks/data/decontaminate.py)."""
    ngram: int = Field(ge=1)                   # word n-grams, as in GPT-3's contamination study
    min_containment: float = Field(gt=0, le=1)  # fraction of an eval example's n-grams found in the row
    held_out: bool                             # the pipeline's own test split (datasets.test_fraction) is an eval set
    eval_sets: list[str]                       # more JSONL files (`messages` or `text` per line) to protect


PiiType = Literal["email", "phone", "ip_address", "credit_card", "iban", "us_ssn", "cn_resident_id", "secret",
                  "url_credentials"]


class PiiConfig(Section):
    types: list[PiiType]
    phone_regions: list[str]                   # tried for numbers without a +country prefix
    ner_model: str | None                      # an installed spaCy model for presidio NER (names, places); None: off

    @field_validator("phone_regions")
    @classmethod
    def _known_regions(cls, regions: list[str]) -> list[str]:
        import phonenumbers

        if unknown := [r for r in regions if r not in phonenumbers.SUPPORTED_REGIONS]:
            raise ValueError(f"unknown phone region {', '.join(unknown)}: ISO 3166 codes such as US, GB, CN")
        return regions


class ExecutorConfig(Section):
    """Where the clean stage's tasks run: the per-range passes (filters, fingerprints, signatures, PII) and the
    partitioned global steps (exact dedup, LSH buckets, verification); the driver only joins their small results."""
    kind: Literal["local", "dask"]
    workers: int = Field(ge=1)                 # processes here (local), or LocalCluster workers (dask, no address)
    address: str | None                        # an existing Dask scheduler, e.g. tcp://10.0.0.5:8786
    chunk_mb: float = Field(gt=0)              # input bytes per task: bounds memory, the corpus is streamed
    partitions: int = Field(ge=1)              # shares of the fingerprints and LSH buckets: one task each
    scratch: str                               # the workers' shared folder (path or fsspec URL); "" = the temp dir


class ToxicityConfig(FilterSection):
    """tasks/data/filters/toxicity.py: a conversation is dropped when a reply in `roles` matches the blocklist
    (built-in English and Chinese terms, plus `blocklist_file`) or alt-profanity-check scores it at least
    `threshold`."""
    threshold: float = Field(gt=0, le=1)       # 1: the blocklist alone ("kill the process with kill -9" scores 0.77)
    blocklist_file: str                        # more terms, one per line (as filters/toxicity_blocklist.txt)
    roles: list[Literal["system", "user", "assistant"]]  # whose messages are judged


class PerplexityConfig(FilterSection):
    """tasks/data/filters/perplexity.py: each conversation's assistant tokens scored by a small causal LM; the tail
    above `threshold` (when set) or above the `percentile` of the scores of the rows it sees is dropped."""
    model: str                                 # any HF causal LM folder or hub id
    max_tokens: int = Field(ge=8)              # of each conversation, from its start, in the model's chat template
    batch_size: int = Field(ge=1)
    percentile: float = Field(gt=0, le=100)
    threshold: float = Field(ge=0)             # 0: the percentile decides


class CleanConfig(Section):
    filters: list[str]                         # the filters the scan runs, in this order: names of the sections below
    quality: QualityConfig
    language: LanguageConfig
    toxicity: ToxicityConfig
    perplexity: PerplexityConfig
    near_dedup: NearDedupConfig
    decontamination: DecontaminationConfig
    pii: PiiConfig
    executor: ExecutorConfig

    @field_validator("filters")
    @classmethod
    def _known_and_once(cls, names: list[str]) -> list[str]:
        known = [name for name, field in cls.model_fields.items()
                 if isinstance(field.annotation, type) and issubclass(field.annotation, FilterSection)]
        if unknown := [name for name in names if name not in known]:
            raise ValueError(f"unknown filter {', '.join(unknown)}: a filter is one of {', '.join(known)}")
        if repeated := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"filter {', '.join(repeated)} listed more than once")
        return names
