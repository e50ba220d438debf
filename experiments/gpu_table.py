"""The short table of a `gpu_run.sh` output folder: one line per JSON row, errors included.

python experiments/gpu_table.py OUT_DIR
"""

from __future__ import annotations

import json
import pathlib
import sys

COLUMNS = (
    ("part", 16), ("impl", 15), ("mode", 6), ("dtype", 9), ("batch", 6), ("attention", 9),
    ("dropout_rng", 8), ("samples_per_s", 10), ("busy_ms", 9), ("compile_s", 9),
    ("achieved_gbps", 8), ("note", 40),
)  # fmt: skip


def rows(out: pathlib.Path):
    """(part, row) for every JSON line of every `<part>.jsonl` in `out`, in file-time order."""
    for path in sorted(out.glob("*.jsonl"), key=lambda p: p.stat().st_mtime):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                yield path.stem, row


def _cell(part: str, row: dict, name: str) -> str:
    if name == "part":
        return part
    if name == "impl":
        return str(row.get("impl", "ours"))
    if name == "note":
        note = row.get("error") or row.get("skipped") or ""
        if not note and row.get("gemm_operands"):
            note = "gemms " + ",".join(f"{k}:{v}" for k, v in row["gemm_operands"].items())
        if not note and "median_ms" in row:
            note = f"{row['median_ms']:.2f} ms, temp/BHTT {row.get('temp_over_bhtt')}"
        return str(note)[:40]
    value = row.get(name, "")
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    out = pathlib.Path(argv[0] if argv else ".")
    status = out / "status.txt"
    if status.is_file():
        print(status.read_text().strip())
    print(" ".join(name[:width].ljust(width) for name, width in COLUMNS))
    for part, row in rows(out):
        print(" ".join(_cell(part, row, n)[:w].ljust(w) for n, w in COLUMNS))


if __name__ == "__main__":
    main()
