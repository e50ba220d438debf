"""Converter: round trips, shape inference on other configurations, errors, CLI, orbax model
directories, Stage I -> II transfer (§2.6) and the freeze option (§2.5, Q27)."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from aptpose_jax.convert import (
    export_state_dict,
    freeze_batchnorms,
    freeze_labels,
    frozen_filter,
    load_pth,
    read_state_dict,
    transfer_pretrain_to_lifter,
)
from aptpose_jax.convert.__main__ import main as cli_main
from aptpose_jax.masking import no_masks
from aptpose_jax.models import ModelConfig, build_model
from aptpose_jax.models.io import load_model, model_arrays

SMALL = dict(frames=9, layers=2, channel=16, d_hid=32, sem_layers=2)


def save_pth(sd: dict, path, prefix: str = "") -> None:
    torch.save({prefix + k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, path)


@pytest.mark.parametrize("name", ["stage1_f27.pth", "stage2_f27.pth"])
def test_fixture_round_trip_is_exact(fixtures_dir, name):
    sd = read_state_dict(fixtures_dir / name)
    model, _ = load_pth(fixtures_dir / name, temporal_ratio=0.5)
    back = export_state_dict(model)
    # Everything but the `num_batches_tracked` counters comes back bit for bit.
    assert set(back) == {k for k in sd if not k.endswith("num_batches_tracked")}
    for k, v in back.items():
        np.testing.assert_array_equal(v, sd[k], err_msg=k)


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig("lifter", **SMALL, refine=True),
        ModelConfig("lifter_nomask", 81, layers=3, channel=24, d_hid=40),
        ModelConfig("pretrain", 9, layers=3, channel=32, d_hid=48, sem_layers=2, n_joints=15),
    ],
    ids=lambda c: c.stage,
)
def test_other_configs_infer_and_round_trip(tmp_path, cfg):
    model = build_model(cfg, nnx.Rngs(params=3, dropout=0))
    sd = export_state_dict(model)
    save_pth(sd, tmp_path / "m.pth", prefix="module.")
    loaded, got = load_pth(tmp_path / "m.pth")
    assert got == cfg
    ours, theirs = model_arrays(model), model_arrays(loaded)
    assert ours.keys() == theirs.keys()
    for k in ours:
        np.testing.assert_array_equal(ours[k], theirs[k], err_msg=str(k))


def test_all_key_problems_in_one_error(tmp_path, fixtures_dir):
    sd = read_state_dict(fixtures_dir / "stage2_f27.pth")
    del sd["fcn.1.bias"], sd["Transformer.model.layers.2.feed_forward.w_1.bias"]
    sd["extra.weight"] = np.zeros(3, np.float32)
    sd["encoder2.fc_2.weight"] = np.zeros((64, 128, 3), np.float32)
    sd["fcn_vec.1.bias"] = np.zeros(47, np.float32)
    save_pth(sd, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as err:
        load_pth(tmp_path / "bad.pth")
    msg = str(err.value)
    for part in (
        "missing keys (2)",
        "fcn.1.bias",
        "layers.2.feed_forward.w_1.bias",
        "unexpected keys (1)",
        "extra.weight",
        "mis-shaped keys (2)",
        "encoder2.fc_2.weight",
        "fcn_vec.1.bias: got (47,), expected (48,)",
    ):
        assert part in msg, (part, msg)


def test_not_a_state_dict(tmp_path):
    torch.save({"a": torch.zeros(2)}, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="not an APTPose"):
        load_pth(tmp_path / "x.pth")


def test_cli_writes_model_dir_atomically(tmp_path, fixtures_dir, capsys):
    out = tmp_path / "converted"
    pth = fixtures_dir / "stage2_f27_dataparallel.pth"
    assert cli_main(["--pth", str(pth), "--out", str(out)]) == 0
    assert json.loads((out / "model_config.json").read_text())["frames"] == 27
    restored, cfg = load_model(out)
    reference, _ = load_pth(fixtures_dir / "stage2_f27.pth")
    a, b = model_arrays(restored), model_arrays(reference)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    # A second run refuses to overwrite; a bad input leaves no directory behind.
    assert cli_main(["--pth", str(pth), "--out", str(out)]) == 2
    torch.save({"a": torch.zeros(2)}, tmp_path / "bad.pth")
    assert cli_main(["--pth", str(tmp_path / "bad.pth"), "--out", str(tmp_path / "o2")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pth", "converted"]
    assert "already exists" in capsys.readouterr().err


def test_cli_entry_point_help():
    res = subprocess.run(
        [sys.executable, "-m", "aptpose_jax.convert", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0 and "--pth" in res.stdout and "--out" in res.stdout


def test_transfer_copies_exactly_the_reference_overlap(fixtures_dir):
    stage1, _ = load_pth(fixtures_dir / "stage1_f27.pth", temporal_ratio=0.5)
    stage2 = build_model(ModelConfig("lifter", 27, 3, 64, 128), nnx.Rngs(5))
    before = export_state_dict(stage2)
    keys = transfer_pretrain_to_lifter(stage1, stage2)
    # The overlap of the two official state_dicts, minus the BN step counters we do not carry.
    k1 = set(read_state_dict(fixtures_dir / "stage1_f27.pth"))
    k2 = set(read_state_dict(fixtures_dir / "stage2_f27.pth"))
    shared = k1 & k2
    counters = {k for k in shared if k.endswith("num_batches_tracked")}
    assert set(keys) == shared - counters
    assert len(counters) == 12
    src = export_state_dict(stage1)
    dst = export_state_dict(stage2)
    for k in dst:  # shared keys copied, Stage-II-only keys keep their initialisation
        np.testing.assert_array_equal(dst[k], src[k] if k in keys else before[k], err_msg=k)


def test_transfer_count_at_reference_size_is_163():
    def abstract(stage):
        return nnx.eval_shape(lambda: build_model(ModelConfig(stage, 243), nnx.Rngs(0)))

    from aptpose_jax.convert.mapping import torch_key
    from aptpose_jax.models.io import STATE_FILTER

    def keys(stage):  # parameters and BatchNorm statistics (no dropout seeds)
        flat = nnx.to_flat_state(nnx.state(abstract(stage), STATE_FILTER))
        return {torch_key(p) for p, _ in flat}

    shared = keys("pretrain") & keys("lifter")
    assert len(shared) + 4 * 3 == 163  # + one num_batches_tracked per shared BatchNorm


def test_transfer_rejects_other_frames():
    s1 = build_model(ModelConfig("pretrain", **SMALL), nnx.Rngs(0))
    s2 = build_model(ModelConfig("lifter", **{**SMALL, "frames": 27}), nnx.Rngs(0))
    with pytest.raises(ValueError, match="frames: Stage I 9 vs Stage II 27"):
        transfer_pretrain_to_lifter(s1, s2)


def test_freeze_labels_filter_and_batchnorms():
    model = build_model(ModelConfig("lifter", **SMALL), nnx.Rngs(0))
    frozen = nnx.state(model, nnx.All(nnx.Param, frozen_filter))
    frozen_keys = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(frozen)}
    assert any(k.startswith("encoder4.layers.1.") for k in frozen_keys)
    assert "Transformer.pos_embedding" in frozen_keys and "bone_mask_token" in frozen_keys
    assert not any(k.startswith(("Transformer_reduce", "fcn")) for k in frozen_keys)
    labels = jax.tree.leaves(freeze_labels(model))
    assert labels.count("frozen") == len(jax.tree.leaves(frozen))
    assert labels.count("trainable") == len(jax.tree.leaves(nnx.state(model, nnx.Param))) - len(
        jax.tree.leaves(frozen)
    )
    names = freeze_batchnorms(model)
    assert len(names) == 12 and "encoder3.layers.0.batch_norm2" in names
    model.train()  # frozen BNs ignore .train(): their statistics must not move (Q27)
    before = {k: v for k, v in model_arrays(model).items() if k[-1] in ("mean", "var")}
    nnx.jit(lambda m, x: m(x, no_masks(9)))(
        model, jax.random.normal(jax.random.key(0), (2, 9, 17, 2))
    )
    after = model_arrays(model)
    for k, v in before.items():
        name = ".".join(map(str, k[:-1]))
        moved = not np.array_equal(v, after[k])
        assert moved == (name not in names), name  # layers.1 BNs and heads still train
    assert jnp.all(jnp.isfinite(after[("fcn", 0, "mean")]))
