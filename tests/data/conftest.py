"""Fixtures the data tests share."""
import pytest

from tasks.data.ingest import ingest
from tests.conftest import configured


@pytest.fixture(scope="session")
def sharegpt_sample(tmp_path_factory):
    """1,500 real ShareGPT conversations: natural duplicates, PII and several languages."""
    d = tmp_path_factory.mktemp("sample")
    ingest(configured("ingest", max_records=1500), d / "conv.jsonl", d / "quarantine.jsonl", d / "report.json")
    return d / "conv.jsonl"
