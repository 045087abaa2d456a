"""Hostile sources: every record of a broken JSON array is kept or quarantined, compressed files are read as what
they are, and symlinks out of the folder, directories, FIFOs, devices and empty sources stop ingest before it
writes anything (an empty one is allowed by ingest.allow_empty)."""
from __future__ import annotations

import gzip
import json
import os
import threading
import tracemalloc

import pytest
import zstandard

from tasks.common.jsonl import read_jsonl
from tasks.data import ingest_read
from tasks.data.ingest import ingest
from tests.conftest import conversation, reading

RECORDS = [json.dumps(conversation(f"Question {i}?", f"Answer {i}.", f"r{i}")) for i in range(5)]


def run(tmp_path, source, **changes) -> dict:
    return ingest(reading(source, **changes), tmp_path / "ok.jsonl", tmp_path / "bad.jsonl",
                  tmp_path / "report.json")


def nothing_written(tmp_path) -> bool:
    return not any((tmp_path / name).exists() for name in ("ok.jsonl", "bad.jsonl", "report.json"))


STRAY = '{"id": "r2", "messages": [{"role": "user", "content": "Question 2?"}]]}'   # a "]" too many, then its "}"
MESSAGES_RB = '{"id": "r2", "messages": ]]}'
CUT = '{"id": "r2", "messages": [{"role": "user", "content": "Question 2?"}'        # its "]}" never come
BROKEN_ARRAYS = {   # id: (the array's text, the ids kept, the raw texts quarantined)
    "stray ] inside a record": (f"[{RECORDS[0]}, {RECORDS[1]}, {STRAY}, {RECORDS[3]}, {RECORDS[4]}]",
                                ["r0", "r1", "r3", "r4"], [STRAY]),
    "stray ] for its messages": (f'[{RECORDS[0]}, {RECORDS[1]}, {MESSAGES_RB}, {RECORDS[3]},\n{RECORDS[4]}]',
                                 ["r0", "r1", "r3", "r4"], [MESSAGES_RB]),
    "stray } in a record": (f"[{RECORDS[0]}, {RECORDS[1]}, {STRAY.replace(']]}', '}]}')}, {RECORDS[3]}, {RECORDS[4]}]",
                            ["r0", "r1", "r3", "r4"], [STRAY.replace("]]}", "}]}")]),
    # the issue's: main read r0 and r1, took the "]" for the array's end and stopped, exit 0, rows_in 2
    "stray ] between records": (f"[{RECORDS[0]}, {RECORDS[1]}, ], {RECORDS[2]}, {RECORDS[3]}, {RECORDS[4]}]",
                                ["r0", "r1", "r2", "r3", "r4"], ["]"]),
    "a record after the array": (f"[{RECORDS[0]}, {RECORDS[1]}, {RECORDS[2]}, {RECORDS[3]}] {RECORDS[4]}\n",
                                 ["r0", "r1", "r2", "r3", "r4"], ["]"]),
    "the file cut off in a record": (f"[{RECORDS[0]},\n{RECORDS[1]},\n{CUT}", ["r0", "r1"], [CUT]),
    # the records after the cut one read as its turns, up to the file's end: the rest is one blob (but see below)
    "a record cut off, the next glued on": (f"[{RECORDS[0]},\n{RECORDS[1]},\n{CUT},\n{RECORDS[3]},\n{RECORDS[4]}]",
                                            ["r0", "r1"], [f"{CUT},\n{RECORDS[3]},\n{RECORDS[4]}]"]),
}


@pytest.mark.parametrize("chunk", [7, ingest_read.CHUNK_CHARS], ids=["7-char windows", "default windows"])
@pytest.mark.parametrize("text, kept, quarantined", BROKEN_ARRAYS.values(), ids=BROKEN_ARRAYS.keys())
def test_a_broken_json_array_keeps_or_quarantines_every_record(tmp_path, monkeypatch, chunk, text, kept, quarantined):
    """The reader resynchronises after a bracket that closes what it did not open, however the file is windowed."""
    monkeypatch.setattr(ingest_read, "CHUNK_CHARS", chunk)
    src = tmp_path / "raw.json"
    src.write_text(text)

    counts = run(tmp_path, src)

    assert [row["id"] for row in read_jsonl(tmp_path / "ok.jsonl")] == kept
    assert [entry["raw"] for entry in read_jsonl(tmp_path / "bad.jsonl")] == quarantined
    assert counts["rows_in"] == len(kept) + len(quarantined) == counts["rows_kept"] + counts["rows_quarantined"]


def test_an_unclosed_bracket_does_not_pull_the_rest_of_the_file_into_memory(tmp_path, monkeypatch):
    """Past MAX_RECORD_CHARS the element is taken as broken and reading resynchronises: memory still follows the
    longest record, not the file (the records after the cut one would otherwise decode as its turns, to the end)."""
    monkeypatch.setattr(ingest_read, "MAX_RECORD_CHARS", 2**20)
    src, n = tmp_path / "raw.json", 4096
    with open(src, "w") as f:
        f.write(f"[\n{CUT}")
        f.writelines(",\n" + json.dumps(conversation(f"Question {i}?", f"Answer {i}: " + "blah " * 1600, f"r{i}"))
                     for i in range(n))
        f.write("\n]\n")

    tracemalloc.start()
    counts = run(tmp_path, src)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    assert (counts["rows_kept"], counts["quarantined_by_reason"]) == (n, {"invalid_json": 1})
    assert peak < src.stat().st_size / 4, f"ingest peak {peak / 2**20:.1f} MiB for a {src.stat().st_size} B file"


def zstd_frames(data: bytes) -> bytes:
    """Two frames, as `zstd -T0` and pzstd write: a reader that stops after the first loses the rest."""
    half, cctx = len(data) // 2, zstandard.ZstdCompressor()
    return cctx.compress(data[:half]) + cctx.compress(data[half:])


COMPRESSED = {"raw.jsonl.gz": gzip.compress, "raw.jsonl": gzip.compress, "raw.json.gz": gzip.compress,
              "raw.jsonl.zst": zstd_frames, "raw.json.zst": zstd_frames, "raw.json": zstd_frames}


@pytest.mark.parametrize("name, compress", COMPRESSED.items(), ids=COMPRESSED.keys())
def test_gzip_and_zstd_sources_are_read_as_what_they_hold(tmp_path, name, compress):
    """By their first bytes: a gzip file named .jsonl is not read as lines of invalid UTF-8."""
    rows = [*RECORDS[:2], '{"id": "cut", "messages": [', *RECORDS[2:]]
    text = "\n".join(rows) + "\n" if ".jsonl" in name else "[\n" + ",\n".join(rows) + "\n]\n"
    src = tmp_path / name
    src.write_bytes(compress(text.encode()))

    counts = run(tmp_path, src)

    assert [row["id"] for row in read_jsonl(tmp_path / "ok.jsonl")] == [f"r{i}" for i in range(5)]
    assert counts["rows_in"] == 6 and counts["quarantined_by_reason"] == {"invalid_json": 1}
    assert next(read_jsonl(tmp_path / "bad.jsonl"))["raw"].startswith('{"id": "cut", "messages": [')


@pytest.mark.parametrize("name, compress", [("raw.jsonl.gz", gzip.compress), ("raw.jsonl.zst", zstd_frames)])
def test_a_compressed_source_cut_off_is_an_error_naming_it(tmp_path, name, compress):
    """Cut at a line's end the lost records would leave no broken one behind: the cut stream itself is the error
    (zstandard's own stream reader ends there quietly)."""
    src = tmp_path / name
    data = compress(("\n".join(RECORDS) + "\n").encode())
    src.write_bytes(data[: len(data) - 12])

    with pytest.raises(ValueError, match=f"{src} cannot be read to its end"):
        run(tmp_path, src)
    assert nothing_written(tmp_path)


def test_zstd_without_the_zstandard_module_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_read, "zstandard", None)
    src = tmp_path / "raw.jsonl.zst"
    src.write_bytes(zstd_frames("\n".join(RECORDS).encode()))

    with pytest.raises(ValueError, match="zstd-compressed and the zstandard module is not installed"):
        run(tmp_path, src)
    assert nothing_written(tmp_path)


def test_a_name_that_says_gz_over_plain_bytes_is_an_error(tmp_path):
    src = tmp_path / "raw.jsonl.gz"
    src.write_text("\n".join(RECORDS))
    with pytest.raises(ValueError, match=r"is named \.gz but is not gzip"):
        run(tmp_path, src)


def test_a_symlink_out_of_the_source_folder_is_refused_and_one_inside_it_is_read(tmp_path):
    (tmp_path / "data").mkdir()
    secret = tmp_path / "secret.jsonl"         # valid records: reading them would pass, and copy them
    secret.write_text("\n".join(RECORDS) + "\n")
    link = tmp_path / "data" / "raw.jsonl"
    link.symlink_to(secret)

    with pytest.raises(ValueError, match=f"ingest source '{link}' is a symlink to {secret.resolve()}, outside its own folder"):
        run(tmp_path, link)
    assert nothing_written(tmp_path)

    (tmp_path / "data" / "export.jsonl").write_text("\n".join(RECORDS) + "\n")
    link.unlink()
    link.symlink_to("export.jsonl")
    assert run(tmp_path, link)["rows_kept"] == 5


@pytest.mark.parametrize("kind", ["a directory", "a character device"])
def test_a_source_that_is_not_a_regular_file_is_refused(tmp_path, kind):
    src = tmp_path if kind == "a directory" else "/dev/null"
    with pytest.raises(ValueError, match=f"ingest source '{src}' is {kind}, not a file of records"):
        run(tmp_path, src)
    assert nothing_written(tmp_path)


def test_a_fifo_is_refused_before_it_is_opened(tmp_path):
    fifo = tmp_path / "raw.jsonl"
    os.mkfifo(fifo)
    # a writer waits on the other end: an ingest that opened the FIFO would read a valid record and pass, not hang
    writer = threading.Thread(target=fifo.write_text, args=(RECORDS[0] + "\n",), daemon=True)
    writer.start()

    with pytest.raises(ValueError, match=f"ingest source '{fifo}' is a FIFO"):
        run(tmp_path, fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)    # lets the writer finish
    writer.join(5)
    os.close(reader)
    assert nothing_written(tmp_path)


def test_a_missing_source_is_one_line_naming_the_setting_and_the_path(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw.jsonl").symlink_to("gone.jsonl")      # a dangling link is missing too
    for src in (tmp_path / "nope.jsonl", tmp_path / "data" / "raw.jsonl"):
        with pytest.raises(FileNotFoundError, match=f"^ingest source '{src}' does not exist$"):
            run(tmp_path, src)


EMPTY = {"raw.jsonl": b"", "raw.json": b"", "raw.json.gz": gzip.compress(b"[]\n"), "blank.jsonl": b"\n\r\n"}


@pytest.mark.parametrize("name, content", EMPTY.items(), ids=EMPTY.keys())
def test_a_source_without_records_is_an_error_unless_ingest_allow_empty(tmp_path, name, content):
    src = tmp_path / name
    src.write_bytes(content)
    blank_lines = content.count(b"\n") if name == "blank.jsonl" else 0

    with pytest.raises(ValueError, match=f"ingest source '{src}' holds no records.*set ingest.allow_empty: true"):
        run(tmp_path, src)
    assert nothing_written(tmp_path)

    counts = run(tmp_path, src, allow_empty=True)
    assert (counts["rows_in"], counts["rows_kept"], counts["rows_quarantined"]) == (blank_lines, 0, blank_lines)
    assert (tmp_path / "ok.jsonl").read_bytes() == b""
    assert len(list(read_jsonl(tmp_path / "bad.jsonl"))) == blank_lines
    assert json.loads((tmp_path / "report.json").read_text()) == counts
