"""Documents of a text corpus, in order: .txt files (one document each) and JSON Lines (.jsonl, .jsonl.xz: a `text` per line).

Every malformed input is reported with its file and line number, so a bad line in a 40 MB archive can be found.
"""

from __future__ import annotations

import json
import lzma
from collections.abc import Iterable, Iterator
from pathlib import Path

from jaxrun.data.errors import DataError

SUFFIXES = (".txt", ".jsonl", ".jsonl.xz")


def check_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Fail before any work if an input is missing or of an unknown kind."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError("no input files given: pass .txt, .jsonl or .jsonl.xz files")
    for path in paths:
        if not path.exists():
            raise DataError(f"input {path} does not exist")
        if not path.is_file():
            raise DataError(f"input {path} is not a file (pass the files themselves, e.g. {path}/*.jsonl.xz)")
        if not path.name.endswith(SUFFIXES):
            raise DataError(f"input {path}: unknown kind; expected one of {', '.join(SUFFIXES)}")
    return paths


def _bad_utf8(path: Path, line_no: int, column: int, byte: int) -> DataError:
    return DataError(f"{path}:{line_no}: not valid UTF-8 (byte 0x{byte:02x} at column {column}); re-encode the file as UTF-8")


def _text_documents(path: Path) -> Iterator[str]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line_start = raw.rfind(b"\n", 0, err.start) + 1
        raise _bad_utf8(path, raw.count(b"\n", 0, err.start) + 1, err.start - line_start + 1, raw[err.start]) from None
    if not text.strip():
        raise DataError(f"input {path} is empty: no document to tokenize")
    yield text


def _jsonl_lines(path: Path) -> Iterator[bytes]:
    if path.name.endswith(".xz"):
        try:
            with lzma.open(path, "rb") as f:
                yield from f
        except lzma.LZMAError as err:
            raise DataError(f"input {path}: not a valid .xz archive ({err})") from None
    else:
        with open(path, "rb") as f:
            yield from f


def _jsonl_documents(path: Path) -> Iterator[str]:
    count = 0
    for line_no, line in enumerate(_jsonl_lines(path), start=1):
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise _bad_utf8(path, line_no, err.start + 1, line[err.start]) from None
        if not decoded.strip():
            continue
        try:
            record = json.loads(decoded)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{line_no}: not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise DataError(f'{path}:{line_no}: expected a JSON object with a string "text" field, got {decoded[:80].strip()!r}')
        count += 1
        yield record["text"]
    if count == 0:
        raise DataError(f"input {path} is empty: no JSON lines with a \"text\" field")


def iter_documents(paths: Iterable[str | Path]) -> Iterator[str]:
    """The documents of all inputs, file by file, in order. Call check_inputs first to fail early on missing files."""
    for path in paths:
        path = Path(path)
        yield from (_text_documents(path) if path.name.endswith(".txt") else _jsonl_documents(path))
