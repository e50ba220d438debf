"""Configs, train/eval steps, data parallelism, checkpoints and resume, end-to-end runs."""

import dataclasses
import importlib.util
import json
import math
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from aptpose_jax import run_builder, sharding, steps, train, weights
from aptpose_jax.models import build_model

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

CONFIG_FILES = sorted(p for p in (REPO_ROOT / "configs").glob("*.py") if p.stem != "__init__")


def load_config(name: str, arg: str | None = None):
    path = REPO_ROOT / "configs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"cfg_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def tiny(config, data_root, **overrides):
    """A demo configuration shrunk further so a test trains in seconds."""
    c = config
    c.data.root = str(data_root)
    c.model.frames = 27
    c.model.layers = 2
    c.model.channel = 16
    c.model.d_hid = 32
    c.data.subjects_train = "S1"
    c.data.subjects_test = "S9"
    c.data.actions = "Walking,Directions"
    c.optim.batch_size = 16
    c.optim.num_epochs = 2
    c.optim.max_steps_per_epoch = 4
    c.eval.batch_size = 16
    c.eval.max_batches = 2
    c.log.every_steps = 2
    c.log.progress_bar = False
    c.log.tensorboard = False
    for path, value in overrides.items():
        node = c
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("arg", [None, "demo"])
def test_every_config_loads_and_initialises(path, arg):
    config = load_config(path.stem, arg)
    cfg = run_builder.model_config(config)
    shapes = nnx.eval_shape(lambda: build_model(cfg, nnx.Rngs(0)))
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(shapes, nnx.Param)))
    assert n_params > 0
    if arg == "demo":
        # `make demo` (the h36m configs) lifts 9-frame windows; the other demos keep 27.
        frames = 9 if path.stem.startswith("h36m") else 27
        assert config.data.demo and config.model.frames == frames


def test_config_override_typo_is_an_error(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "aptpose_jax.main",
        "--config=configs/h36m_pretrain.py:demo",
        f"--workdir={tmp_path}",
        "--config.optim.lrr=0.5",
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "lrr" in proc.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_unknown_config_argument_is_an_error():
    with pytest.raises(ValueError, match="unknown config argument"):
        load_config("h36m_pretrain", "dmeo")


def test_learning_rate_schedule_matches_reference():
    c = load_config("h36m_finetune")
    assert train.learning_rate(c.optim, 1) == pytest.approx(7e-4)
    assert train.learning_rate(c.optim, 3) == pytest.approx(7e-4 * 0.97**2)
    c.optim.large_decay_epoch = 2
    assert train.learning_rate(c.optim, 3) == pytest.approx(7e-4 * 0.5 * 0.97)


def test_epoch_order_is_a_function_of_seed_and_epoch():
    a = train.epoch_order(1, 3, 100)
    np.testing.assert_array_equal(a, train.epoch_order(1, 3, 100))
    assert not np.array_equal(a, train.epoch_order(1, 4, 100))
    np.testing.assert_array_equal(np.sort(a), np.arange(100))


def _metrics(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines]


@pytest.fixture(scope="module")
def stage1_workdir(demo_root, tmp_path_factory):
    """A tiny Stage I run on demo data, shared by the fine-tuning tests."""
    workdir = tmp_path_factory.mktemp("stage1")
    pre = tiny(
        load_config("h36m_pretrain", "demo"),
        demo_root,
        **{"optim.num_epochs": 3, "optim.max_steps_per_epoch": 6, "optim.lr": 2e-3},
    )
    summary = train.train_and_evaluate(pre, str(workdir))
    return workdir, summary


def test_pretraining_lowers_the_loss(stage1_workdir):
    workdir, summary = stage1_workdir
    losses = [m["train/loss"] for m in _metrics(workdir) if "train/loss" in m]
    assert losses[-1] < losses[0]
    assert math.isfinite(summary["p1"]) and summary["p1"] > 0
    assert "Directions" in summary["table"]


def test_finetune_from_stage1_lowers_the_loss_and_eval_reproduces_it(
    stage1_workdir, demo_root, tmp_path
):
    fine = tiny(
        load_config("h36m_finetune", "demo"),
        demo_root,
        **{
            "init.from_workdir": str(stage1_workdir[0]),
            "optim.lr": 2e-3,
            "optim.num_epochs": 3,
            "optim.max_steps_per_epoch": 6,
        },
    )
    summary = train.train_and_evaluate(fine, str(tmp_path / "fine"))
    losses = [m["train/loss"] for m in _metrics(tmp_path / "fine") if "train/loss" in m]
    assert losses[-1] < losses[0]
    assert "Directions" in summary["table"] and summary["p1"] > 0
    ev = tiny(
        load_config("h36m_eval", "demo"), demo_root, **{"init.from_workdir": str(tmp_path / "fine")}
    )
    result = train.train_and_evaluate(ev, str(tmp_path / "eval"))
    assert result["p1"] == pytest.approx(summary["p1"], rel=1e-5)  # same weights, same masks
    # The evaluation names the step of the weights it evaluated (the best checkpoint's).
    best_step = max(int(p.name) for p in (tmp_path / "fine" / "best").iterdir())
    assert json.loads((tmp_path / "eval" / f"eval_{best_step:08d}.json").read_text())["step"] == (
        best_step
    )
    assert json.loads((tmp_path / "eval" / "config.json").read_text())["weights"]["step"] == (
        best_step
    )


# Kill-and-resume tests: tests/test_resume.py (every boundary) and tests/test_soak.py (kill -9).


def test_eight_device_step_equals_one_device_step(demo_root, tmp_path):
    assert len(jax.devices()) == 8, "conftest must provide 8 CPU devices"
    config = tiny(load_config("h36m_finetune", "demo"), demo_root, **{"init.from_workdir": ""})
    run = run_builder.build_run(config, tmp_path / "run")
    batch = run.train_inputs(run.train_ds.get_batch(np.arange(16)))
    key = jax.random.key(0)
    # Plain gradient steps (identity transform): Adam's first step is ~sign(g), which would
    # turn float reduction-order noise in near-zero gradients into lr-sized differences.
    sgd = optax.identity()
    step = jax.jit(steps.make_train_step(run.graphdef, run.rest, run.step_cfg, sgd))
    results = []
    for devices in (jax.devices(), jax.devices()[:1]):
        mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
        state = steps.TrainState(
            params=run.params,
            batch_stats=run.batch_stats,
            opt_state=sgd.init(run.params),
            step=jnp.int32(0),
        )
        state = sharding.put_replicated(state, mesh)
        new_state, m = step(state, sharding.put_batch(batch, mesh), key, jnp.float32(1.0))
        assert len(jax.tree.leaves(new_state.params)[0].devices()) == len(devices)
        results.append(jax.device_get((new_state.params, new_state.batch_stats, m["loss"])))
    run.close()
    (p8, bs8, loss8), (p1, bs1, loss1) = results
    assert float(loss8) == pytest.approx(float(loss1), rel=1e-5)
    for x, y in zip(jax.tree.leaves((p8, bs8)), jax.tree.leaves((p1, bs1)), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)


def test_batch_not_divisible_by_devices_is_a_clear_error(demo_root, tmp_path):
    config = tiny(load_config("h36m_pretrain", "demo"), demo_root, **{"optim.batch_size": 12})
    with pytest.raises(ValueError, match="not divisible by the 8 devices"):
        run_builder.build_run(config, tmp_path / "run")


def test_nan_loss_aborts_naming_the_step():
    history = [jnp.float32(1.0), jnp.float32(0.5), jnp.float32(jnp.nan)]
    with pytest.raises(train.NonFiniteLossError, match="global step 12"):
        train._check_finite(history, 10)


def test_eval_needs_weights(demo_root, tmp_path):
    config = tiny(load_config("h36m_eval", "demo"), demo_root, **{"init.from_workdir": ""})
    with pytest.raises(ValueError, match="evaluation needs weights"):
        run_builder.build_run(config, tmp_path / "run")


def test_evaluate_converted_fixture_weights_end_to_end(demo_root, fixtures_dir, tmp_path):
    config = tiny(
        load_config("h36m_eval", "demo"),
        demo_root,
        **{"init.from_workdir": "", "init.from_pth": str(fixtures_dir / "stage2_f27.pth")},
    )
    summary = train.train_and_evaluate(config, str(tmp_path / "eval"))
    assert math.isfinite(summary["p1"]) and summary["p1"] > 0
    assert math.isfinite(summary["p2"]) and summary["p2"] <= summary["p1"]
    saved = json.loads((tmp_path / "eval" / "config.json").read_text())
    assert saved["model"]["stage"] == "lifter"
    # The converter's output directory serves as init.from_workdir with the same result.
    from aptpose_jax.convert import convert_pth

    convert_pth(fixtures_dir / "stage2_f27.pth", tmp_path / "converted")
    config.init.from_pth = ""
    config.init.from_workdir = str(tmp_path / "converted")
    again = train.train_and_evaluate(config, str(tmp_path / "eval2"))
    assert again["p1"] == pytest.approx(summary["p1"], rel=1e-6)


def test_model_config_from_run_config_is_frozen_dataclass():
    c = load_config("h36m_pretrain")
    cfg = run_builder.model_config(c)
    assert dataclasses.is_dataclass(cfg) and cfg.frames == 243 and cfg.temporal_ratio == 0.8


def test_freeze_keeps_stage1_weights_and_their_batchnorm_statistics(
    stage1_workdir, demo_root, tmp_path
):
    pre_dir = stage1_workdir[0]
    stage1, _, _ = weights.model_from_workdir(str(pre_dir), nnx.Rngs(0))

    def cfg():
        return tiny(
            load_config("h36m_finetune", "demo"),
            demo_root,
            **{
                "init.from_workdir": str(pre_dir),
                "init.freeze": True,
                "optim.num_epochs": 1,
                "optim.max_steps_per_epoch": 3,
                "optim.lr": 1e-2,
                "eval.every_epochs": 0,
            },
        )

    train.train_and_evaluate(cfg(), str(tmp_path / "fine"))
    initial = run_builder.build_run(cfg(), tmp_path / "fresh")
    start = jax.device_get(nnx.to_pure_dict(initial.params))
    initial.close()
    run = run_builder.build_run(cfg(), tmp_path / "fine")
    state = run.restore_latest(run.initial_state())[0]
    run.close()
    params = jax.device_get(nnx.to_pure_dict(state.params))
    stats = jax.device_get(nnx.to_pure_dict(state.batch_stats))
    s1_params = nnx.to_pure_dict(nnx.state(stage1, nnx.Param))
    s1_stats = nnx.to_pure_dict(nnx.state(stage1, nnx.BatchStat))
    for name in ("encoder1", "encoder2", "encoder3", "encoder4", "Transformer"):
        for x, y in zip(
            jax.tree.leaves(params[name]), jax.tree.leaves(s1_params[name]), strict=True
        ):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for name in ("encoder1", "encoder2", "encoder3", "encoder4"):  # BN stats frozen (Q27)
        for x, y in zip(jax.tree.leaves(stats[name]), jax.tree.leaves(s1_stats[name]), strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(params["fcn"]), jax.tree.leaves(start["fcn"]), strict=True)
    ]
    assert any(changed)  # the Stage II heads do train


@pytest.mark.parametrize("name", ["3dhp_finetune", "wild_finetune"])
def test_mask_free_lifter_trains_and_reports_its_protocol(name, demo_root, tmp_path):
    config = tiny(
        load_config(name, "demo"),
        demo_root,
        **{
            "init.from_workdir": "",
            "optim.num_epochs": 1,
            "optim.max_steps_per_epoch": 2,
            "eval.max_batches": -1,
        },
    )
    summary = train.train_and_evaluate(config, str(tmp_path))
    assert math.isfinite(summary["p1"]) and summary["p1"] > 0
    if name.startswith("3dhp"):
        assert 0.0 <= summary["pck150"] <= 100.0 and 0.0 <= summary["auc"] <= 100.0
        rows = (tmp_path / "mpi3dhp_metrics.csv").read_text().splitlines()
        assert rows[0].startswith("group,name,frames,pck150,auc,mpjpe")
        assert sum(r.startswith("sequence,TS") for r in rows) == 6
        report = json.loads((tmp_path / "mpi3dhp_metrics.json").read_text())
        assert report["overall"]["frames"] == sum(
            v["frames"] for v in report["per_sequence"].values()
        )
    else:
        assert "Walking" in summary["table"]  # detectron COCO input, H36M targets
