"""Atomic file writers: a reader sees the old file or the new one, never half of either.

Each writer puts the bytes into a temporary file in the destination folder, gives it normal
permissions (0644; `mkstemp` creates 0600) and renames it over the destination with
`os.replace`, which is atomic on POSIX file systems. A failure removes the temporary file and
leaves the destination as it was.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Mapping, Sequence

FILE_MODE = 0o644


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` atomically (folders created as needed), mode 0644."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes UTF-8 `text` to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(obj, path: str | os.PathLike, indent: int = 2) -> None:
    """Writes `obj` (dicts/lists of numbers and strings, numpy scalars allowed) as JSON."""
    text = json.dumps(
        obj, indent=indent, default=lambda x: x.item() if hasattr(x, "item") else str(x)
    )
    write_text(path, text + "\n")


def write_csv(rows: Sequence[Mapping], columns: Sequence[str], path: str | os.PathLike) -> None:
    """Writes dict rows as CSV with the given column order (floats with 4 decimals)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {c: f"{row[c]:.4f}" if isinstance(row[c], float) else row[c] for c in columns}
        )
    write_text(path, buf.getvalue())
