"""The reference fixtures travel with the repository: the tests read them from tests/fixtures
only (never from a folder beside the checkout), the files are the committed bytes, and the
regeneration script's pure parts (argument checks) work without the official code."""

from __future__ import annotations

import hashlib
import pathlib
import subprocess
import sys

import pytest
from conftest import FIXTURES_DIR, REPO_ROOT

SCRIPT = REPO_ROOT / "tests" / "fixtures" / "regenerate.py"


def test_fixtures_dir_is_inside_the_repository(fixtures_dir):
    assert fixtures_dir == FIXTURES_DIR
    assert fixtures_dir.resolve().is_relative_to(REPO_ROOT.resolve())
    assert fixtures_dir.resolve() == (REPO_ROOT / "tests" / "fixtures").resolve()


def test_fixture_files_match_their_checksums(fixtures_dir):
    lines = (fixtures_dir / "SHA256SUMS").read_text().split("\n")
    sums = dict(reversed(line.split()) for line in lines if line.strip())
    assert len(sums) == 7
    for name, digest in sums.items():
        assert hashlib.sha256((fixtures_dir / name).read_bytes()).hexdigest() == digest, name


def test_no_code_or_doc_points_outside_the_repository_for_test_data():
    """`.ci/run` clones the repository with a copy of shared/ beside it: a path that climbs out
    of the checkout would find it there by accident and hide a missing in-repo fixture."""
    needles = ("shared/reference/fixtures", '"shared" / "reference"', "../shared/reference/fix")
    roots = [REPO_ROOT / d for d in ("tests", "aptpose_jax", "experiments", "docs")]
    files = [REPO_ROOT / "README.md"]
    files += [p for r in roots for p in r.rglob("*") if p.suffix in (".py", ".md", ".toml")]
    hits = [
        f"{p.relative_to(REPO_ROOT)}: {n}"
        for p in files
        if p != pathlib.Path(__file__).resolve()
        for n in needles
        if n in p.read_text(encoding="utf-8", errors="replace")
    ]
    assert not hits


def _regenerate(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), *args]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--official", "/nonexistent/apt"), "official checkout not found: /nonexistent/apt"),
        ((), "--official"),
    ],
)
def test_regenerate_bad_arguments_give_one_line(args, expected):
    proc = _regenerate(*args)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0]


def test_regenerate_rejects_a_folder_that_is_not_the_official_code(tmp_path):
    proc = _regenerate("--official", str(tmp_path))
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "model/stageI/stmo_pretrain_Arc3_Geo1.py" in lines[0]
