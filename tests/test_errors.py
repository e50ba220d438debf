"""User errors: each case of docs/errors.md is a UserError naming the file or field and the fix,
and the entry points show it as one line with exit status 2 (a traceback only on demand)."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_train import load_config, tiny

from aptpose_jax import errors, run_builder, train
from aptpose_jax.convert.__main__ import main as convert_main
from aptpose_jax.datasets import demo
from aptpose_jax.datasets.safe_npz import load_npz, save_npz_atomic
from aptpose_jax.errors import (
    ConfigError,
    DataError,
    MissingFileError,
    UnsafeDirectoryError,
    UserError,
    WeightsError,
)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"


def _run_main(*args, timeout=300):
    cmd = [sys.executable, "-m", "aptpose_jax.main", *args]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def _copy_demo(demo_root, dst):
    shutil.copytree(demo_root, dst)
    return dst


# ---------------------------------------------------------------- the library raises UserErrors


def _finetune(demo_root, **kw):
    return tiny(load_config("h36m_finetune", "demo"), demo_root, **{"init.from_workdir": "", **kw})


def _eval(demo_root, **kw):
    return tiny(load_config("h36m_eval", "demo"), demo_root, **{"init.from_workdir": "", **kw})


def case_missing_data_file(demo_root, tmp_path):
    config = _finetune(tmp_path / "nothing", **{"data.demo": False})
    return config, f"Human3.6M file not found: {tmp_path / 'nothing'}", MissingFileError


def case_corrupt_data_file(demo_root, tmp_path):
    root = _copy_demo(demo_root, tmp_path / "d")
    (root / "data_3d_h36m.npz").write_bytes(b"not a zip file")
    config = _finetune(root, **{"data.demo": False})
    return config, "data_3d_h36m.npz", DataError


def case_unsafe_pickle(demo_root, tmp_path):
    root = _copy_demo(demo_root, tmp_path / "d")
    holder = np.empty((), dtype=object)
    holder[()] = {"S1": _Evil()}
    np.savez(root / "data_3d_h36m.npz", positions_3d=holder)
    config = _finetune(root, **{"data.demo": False})
    return config, "forbidden global", UserError


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def case_bad_data_shape(demo_root, tmp_path):
    root = _copy_demo(demo_root, tmp_path / "d")
    positions = load_npz(root / "data_3d_h36m.npz")["positions_3d"]
    positions["S1"] = {a: x[:, :17] for a, x in positions["S1"].items()}  # not (N, 32, 3)
    save_npz_atomic(root / "data_3d_h36m.npz", positions_3d=positions)
    config = _finetune(root, **{"data.demo": False})
    return config, "(N, 32, 3)", DataError


def case_demo_into_real_data(demo_root, tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "data_3d_h36m.npz").write_bytes(b"user data")
    return _finetune(tmp_path / "real"), "data_3d_h36m.npz", UnsafeDirectoryError


def case_batch_not_divisible(demo_root, tmp_path):
    return _finetune(demo_root, **{"optim.batch_size": 12}), "optim.batch_size=12", ConfigError


def case_bad_model_value(demo_root, tmp_path):
    return _finetune(demo_root, **{"model.channel": 60}), "channel=60", ConfigError


def case_bad_tds(demo_root, tmp_path):
    return _finetune(demo_root, **{"data.tds": 0}), "data.tds=0", ConfigError


def case_too_few_windows(demo_root, tmp_path):
    return _finetune(demo_root, **{"optim.batch_size": 4096}), "optim.batch_size", ConfigError


def case_eval_without_weights(demo_root, tmp_path):
    return _eval(demo_root), "init.from_workdir", ConfigError


def case_missing_workdir_weights(demo_root, tmp_path):
    return (
        _eval(demo_root, **{"init.from_workdir": str(tmp_path / "no")}),
        "no complete",
        (MissingFileError),
    )


def case_missing_pth(demo_root, tmp_path):
    path = str(tmp_path / "missing.pth")
    return _eval(demo_root, **{"init.from_pth": path}), "missing.pth", MissingFileError


def case_truncated_pth(demo_root, tmp_path):
    path = tmp_path / "truncated.pth"
    path.write_bytes((FIXTURES / "stage2_f27.pth").read_bytes()[:5000])
    return _eval(demo_root, **{"init.from_pth": str(path)}), "truncated.pth", WeightsError


def case_unsafe_pth(demo_root, tmp_path):
    path = tmp_path / "code.pth"
    torch.save({"x": _Evil()}, path)
    return _eval(demo_root, **{"init.from_pth": str(path)}), "code.pth", WeightsError


def case_mismatched_weights(demo_root, tmp_path):
    sd = torch.load(FIXTURES / "stage2_f27.pth")
    del sd["fcn.1.bias"]
    torch.save(sd, tmp_path / "cut.pth")
    path = str(tmp_path / "cut.pth")
    return (
        _eval(demo_root, **{"init.from_pth": path}),
        "cut.pth: state_dict does not match",
        (WeightsError),
    )


def case_stage1_weights_in_stage2_eval(demo_root, tmp_path):
    path = str(FIXTURES / "stage1_f27.pth")
    return _eval(demo_root, **{"init.from_pth": path}), "Stage I (pretrain) weights", WeightsError


def case_refine_without_refine_weights(demo_root, tmp_path):
    path = str(FIXTURES / "stage2_f27.pth")
    config = _eval(demo_root, **{"init.from_pth": path, "model.refine": True})
    return config, "no refine module", WeightsError


CASES = [v for k, v in dict(globals()).items() if k.startswith("case_")]


@pytest.mark.parametrize("case", CASES, ids=lambda f: f.__name__.removeprefix("case_"))
def test_user_error_names_the_file_or_field(case, demo_root, tmp_path):
    config, expected, kind = case(demo_root, tmp_path)
    with pytest.raises(kind) as err:
        train.train_and_evaluate(config, str(tmp_path / "workdir"))
    assert isinstance(err.value, UserError)
    assert expected in str(err.value)


def test_explicit_size_that_conflicts_with_the_weights_is_an_error(demo_root, tmp_path):
    path = str(FIXTURES / "stage2_f27.pth")
    config = _eval(demo_root, **{"init.from_pth": path, "model.frames": 81})
    with pytest.raises(ConfigError, match=r"--config.model.frames=81 \(the weights have 27\)"):
        run_builder.build_run(config, tmp_path / "w", explicit=frozenset({"model.frames"}))
    config.model.dropout = 0.0  # not a size: from the run config
    run = run_builder.build_run(config, tmp_path / "w")  # not given explicitly: the weights decide
    assert run.model_cfg.frames == 27 and run.test_ds.frames == 27
    assert run.step_cfg.mask_spec.frames == 27 and run.model_cfg.dropout == 0.0
    run.close()
    saved = json.loads((tmp_path / "w" / "config.json").read_text())
    assert saved["model"]["frames"] == 27 and saved["model"]["dropout"] == 0.0
    assert saved["weights"] == {"source": config.init.from_pth, "step": None}


def test_one_line_collapses_messages():
    assert errors.one_line(ValueError("a\n  b   c\n")) == "a b c"
    assert errors.debug_requested(["x", "--debug"]) and errors.debug_requested(["--verbosity=1"])
    assert errors.debug_requested(["-v", "2"]) and not errors.debug_requested(["--verbosity=0"])


# ---------------------------------------------------------------- the entry points: one line


def _assert_one_line(proc, *parts):
    assert proc.returncode == errors.EXIT_USER_ERROR, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert lines[-1].startswith("error: "), proc.stderr
    for part in parts:
        assert part in lines[-1], (part, lines[-1])


def test_main_override_typo_is_one_line(tmp_path):
    proc = _run_main(
        "--config=configs/h36m_pretrain.py:demo", f"--workdir={tmp_path}", "--config.optim.lrr=1"
    )
    _assert_one_line(proc, "lrr", 'Did you mean "lr"')
    assert len([x for x in proc.stderr.splitlines() if x.strip()]) == 1


@pytest.mark.parametrize(
    "config, parts",
    [
        ("configs/h36m_evl.py", ("'configs/h36m_evl.py' not found", "did you mean h36m_eval?")),
        ("configs/h36m_eval.py:dmeo", ("unknown config argument 'dmeo' for h36m_eval",
                                       "allowed: demo, gt, cpn")),
    ],
    ids=["missing_config_file", "unknown_config_argument"],
)  # fmt: skip
def test_main_config_errors_are_one_plain_sentence(tmp_path, config, parts):
    proc = _run_main(f"--config={config}", f"--workdir={tmp_path / 'w'}")
    _assert_one_line(proc, *parts)
    assert len([x for x in proc.stderr.splitlines() if x.strip()]) == 1
    assert "Error whilst parsing" not in proc.stderr and not (tmp_path / "w").exists()


def test_main_user_errors_are_one_line_and_debug_shows_the_traceback(demo_root, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "data_3d_h36m.npz").write_bytes(b"the user's data")
    weights = FIXTURES / "stage2_f27.pth"
    args = ["--config=configs/h36m_eval.py:demo", f"--workdir={tmp_path / 'w'}",
            f"--config.data.root={real}", f"--config.init.from_pth={weights}"]  # fmt: skip
    proc = _run_main(*args)
    _assert_one_line(proc, "data_3d_h36m.npz", "--config.data.root")
    assert (real / "data_3d_h36m.npz").read_bytes() == b"the user's data"  # untouched
    assert sorted(p.name for p in real.iterdir()) == ["data_3d_h36m.npz"]
    proc = _run_main(*args, "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    assert "UnsafeDirectoryError" in proc.stderr


def test_convert_cli_truncated_and_unsafe_files_are_one_line(tmp_path, capsys, fixtures_dir):
    truncated = tmp_path / "half.pth"
    truncated.write_bytes((fixtures_dir / "stage2_f27.pth").read_bytes()[:3000])
    assert convert_main(["--pth", str(truncated), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "half.pth" in err and "\n" not in err
    assert convert_main(["--pth", str(tmp_path / "none.pth"), "--out", str(tmp_path / "o")]) == 2
    assert "none.pth" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(WeightsError):
        convert_main(["--pth", str(truncated), "--out", str(tmp_path / "o"), "--debug"])


def test_convert_stage1_records_its_temporal_ratio(tmp_path, capsys, fixtures_dir):
    import json

    pth = fixtures_dir / "stage1_f27.pth"
    assert convert_main(["--pth", str(pth), "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr()
    assert "--temporal-ratio was not given" in out.err and "0.8" in out.err
    assert json.loads((tmp_path / "a" / "model_config.json").read_text())["temporal_ratio"] == 0.8
    assert json.loads(out.out)["temporal_ratio_from"].startswith("default")
    args = ["--pth", str(pth), "--out", str(tmp_path / "b"), "--temporal-ratio", "0.7"]
    assert convert_main(args) == 0
    assert json.loads((tmp_path / "b" / "model_config.json").read_text())["temporal_ratio"] == 0.7
    assert "not given" not in capsys.readouterr().err


def test_demo_cli_refuses_a_user_directory(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "mine.txt" in capsys.readouterr().err
