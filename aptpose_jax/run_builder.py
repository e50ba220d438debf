"""Builds everything a run needs from its configuration: data, model, steps, checkpoints.

`build_run(config, workdir)` returns a `Run`: the datasets, the mesh, the jitted train and
eval steps, the initial weights (fresh, from a Stage I workdir or `.pth` for fine-tuning, or
from a Stage II workdir or `.pth` for evaluation) and the checkpoint managers.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging
from flax import nnx

from aptpose_jax import atomic_files, checkpointing, pipeline, resume, sharding, steps
from aptpose_jax import weights as weights_lib
from aptpose_jax.datasets import load_sequences, skeleton
from aptpose_jax.datasets.windows import WindowDataset
from aptpose_jax.errors import ConfigError
from aptpose_jax.masking import MaskSpec
from aptpose_jax.models import ModelConfig, kernels
from aptpose_jax.optim import torch_amsgrad


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
    """The model's static configuration from a run configuration."""
    m = config.model
    fields = dict(
        stage=m.stage,
        frames=m.frames,
        layers=m.layers,
        channel=m.channel,
        d_hid=m.d_hid,
        sem_layers=m.sem_layers,
        n_joints=m.n_joints,
        refine=m.refine,
        dropout=m.dropout,
        temporal_ratio=config.masks.temporal_ratio if m.stage == "pretrain" else 0.0,
        dtype=config.compute_dtype,
        cloned_init=m.cloned_init,
    )
    k = config.kernels
    try:
        compute = kernels.resolve(config.compute_dtype, k.set, k.dropout, k.attention)
        # Resolved here, once: the model, config.json and the summary name what runs.
        fields.update(
            kernels="cpu" if compute.matmul == "transposed" else "plain",
            dropout_rng=compute.dropout,
            attention=compute.attention,
        )
        return ModelConfig(**fields)
    except ValueError as e:  # a bad --config.model.* (or compute_dtype) value
        raise ConfigError(f"model configuration: {e}") from e


def check_config(config: ml_collections.ConfigDict) -> None:
    """Rejects values no run can use, naming the field (before anything is loaded)."""
    d, o = config.data, config.optim
    problems = [
        (f"data.tds={d.tds}", d.tds >= 1),
        (f"data.stride={d.stride}", d.stride >= 1),
        (f"optim.batch_size={o.batch_size}", o.batch_size >= 1),
        (f"eval.batch_size={config.eval.batch_size}", config.eval.batch_size >= 1),
        (f"mode={config.mode!r} (train or eval)", config.mode in ("train", "eval")),
        (f"resume={config.resume!r} (check or force)", config.resume in ("check", "force")),
    ]
    bad = [what for what, ok in problems if not ok]
    if bad:
        raise ConfigError(f"invalid configuration value(s): {', '.join(bad)}")


def _dataset_lists(config, seqs):
    """(root, mask left/right lists, un-flip lists) for the configured dataset."""
    if config.data.dataset == "mpi_inf_3dhp":
        mask_lr = (skeleton.MPI3DHP_JOINTS_LEFT, skeleton.MPI3DHP_JOINTS_RIGHT)
    else:  # H36M lists also on COCO-ordered detectron input (Q23)
        mask_lr = (skeleton.H36M_JOINTS_LEFT, skeleton.H36M_JOINTS_RIGHT)
    if config.model.stage == "pretrain":  # the output is the 2D input layout
        unflip = (tuple(seqs.joints_left_2d), tuple(seqs.joints_right_2d))
    else:
        unflip = (tuple(seqs.joints_left_3d), tuple(seqs.joints_right_3d))
    return seqs.root_joint, mask_lr, unflip


def step_config(config, seqs, cfg: ModelConfig | None = None) -> steps.StepConfig:
    """The step functions' static configuration; `cfg` is the model that runs (sizes)."""
    cfg = cfg or model_config(config)
    root, (mask_l, mask_r), (unflip_l, unflip_r) = _dataset_lists(config, seqs)
    spec = MaskSpec(
        frames=cfg.frames,
        temporal_ratio=config.masks.temporal_ratio,
        joints_per_frame=config.masks.joints_per_frame,
        bones_per_frame=config.masks.bones_per_frame,
        joints_left=tuple(mask_l),
        joints_right=tuple(mask_r),
        bone_pairs=skeleton.H36M_BONE_PAIRS,
        n_joints=cfg.n_joints,
        per_sample=config.masks.per_sample,
    )
    return steps.StepConfig(
        stage=cfg.stage,
        mask_spec=spec,
        masks_in_eval=config.masks.in_eval,
        loss_weights=tuple(config.loss.weights),
        velocity_weight=config.loss.velocity,
        root=root,
        bone_pairs=skeleton.H36M_BONE_PAIRS,
        joints_left=unflip_l,
        joints_right=unflip_r,
        input_joints_left=tuple(seqs.joints_left_2d),
        input_joints_right=tuple(seqs.joints_right_2d),
        test_flip=config.data.test_flip,
        refine=cfg.refine,
    )


@dataclasses.dataclass
class Run:
    """The pieces of one run; see `build_run`."""

    config: ml_collections.ConfigDict
    workdir: Path
    mesh: jax.sharding.Mesh
    model_cfg: ModelConfig
    step_cfg: steps.StepConfig
    train_ds: WindowDataset | None
    test_ds: WindowDataset
    test_seqs: object
    graphdef: object  # training-mode graph
    eval_graphdef: object
    rest: object
    params: object
    batch_stats: object
    tx: optax.GradientTransformation
    train_step: object
    eval_step: object
    checkpoints: checkpointing.RunCheckpoints | None
    base_key: jax.Array
    weights_source: str = ""  # where the initial weights came from ("" fresh)
    weights_step: int | None = None  # their training step, when recorded
    train_pipe: pipeline.Pipeline | None = None
    test_pipe: pipeline.Pipeline | None = None

    def initial_state(self) -> steps.TrainState:
        # Copies: the train step donates its state, and `self.params` must stay usable.
        params, batch_stats = jax.tree.map(jnp.copy, (self.params, self.batch_stats))
        state = steps.TrainState(
            params=params,
            batch_stats=batch_stats,
            opt_state=self.tx.init(params),
            step=jnp.int32(0),
        )
        return sharding.put_replicated(state, self.mesh)

    def train_inputs(self, batch: dict) -> dict:
        """The keys of a host batch that the train step reads."""
        return {k: batch[k] for k in _step_keys(self.model_cfg)}

    def save(self, state, epoch: int, best_p1: float, *, is_best: bool, epoch_done=False,
             best_step: int | None = None):  # fmt: skip
        meta = {
            "epoch": epoch,
            "epoch_done": epoch_done,
            "step": int(state.step),
            "best_p1": best_p1,
            "best_step": best_step,
            "seed": self.config.seed,
            "model_config": dataclasses.asdict(self.model_cfg),
            "resume": resume.resume_fields(self),
        }
        model_tree = {"params": state.params, "batch_stats": state.batch_stats}
        train_tree = {"opt_state": state.opt_state, "step": state.step}
        self.checkpoints.save(int(state.step), model_tree, train_tree, meta, is_best=is_best)

    def restore_latest(self, state):
        model_tree = {"params": state.params, "batch_stats": state.batch_stats}
        train_tree = {"opt_state": state.opt_state, "step": state.step}
        restored = self.checkpoints.restore_latest(model_tree, train_tree)
        if restored is None:
            return None
        m, t, meta = restored
        new = steps.TrainState(
            params=m["params"],
            batch_stats=m["batch_stats"],
            opt_state=t["opt_state"],
            step=t["step"],
        )
        return sharding.put_replicated(new, self.mesh), meta

    def close(self):
        if self.checkpoints is not None:
            self.checkpoints.close()


def _make_tx(config, model) -> optax.GradientTransformation:
    """PyTorch's Adam(amsgrad=True) direction (unit lr; the step applies the lr, §4.2)."""
    tx = torch_amsgrad(b1=0.9, b2=0.999, eps=1e-8)
    if not config.init.freeze:
        return tx
    from aptpose_jax import convert

    labels = convert.freeze_labels(model)  # "frozen" / "trainable" per parameter (Q27)
    return optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()}, labels)


def describe(run: Run, steps_per_epoch: int | None = None) -> str:
    """The start-up summary of a run: devices, model, weights, windows, steps, workdir."""
    c = run.model_cfg
    n_params = sum(int(x.size) for x in jax.tree.leaves(run.params))
    weights = "fresh (random initialisation)"
    if run.weights_source:
        step = "" if run.weights_step is None else f" (step {run.weights_step})"
        weights = f"{run.weights_source}{step}"
    windows = f"test {len(run.test_ds)}"
    if run.train_ds is not None:
        windows = f"train {len(run.train_ds)}, {windows}"
    batch = run.config.optim.batch_size if run.train_ds is not None else run.config.eval.batch_size
    lines = [
        f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; "
        f"{sharding.describe(run.mesh, batch)}",
        f"model: {c.stage}, frames {c.frames}, layers {c.layers}, channel {c.channel}, "
        f"d_hid {c.d_hid}, joints {c.n_joints}, refine {c.refine}; "
        f"{n_params:,} parameters",
        f"compute: {c.dtype}{' (TF32 dots)' if c.dtype == 'tf32' else ''}, kernels {c.kernels}"
        f"{' (' + kernels.KERNELS_ENV + ')' if kernels.kernel_set_override() else ''}, "
        f"dropout {c.dropout_rng}, attention {c.attention}",
        f"weights: {weights}",
        f"windows: {windows} (tds {run.config.data.tds})",
    ]
    if steps_per_epoch is not None:
        o = run.config.optim
        lines.append(
            f"steps per epoch: {steps_per_epoch} (batch {o.batch_size}), {o.num_epochs} epochs"
        )
    lines.append(f"workdir: {run.workdir}")
    return "run: " + "\n  ".join(lines)


def _record_config(config, cfg: ModelConfig, weights, path: Path) -> None:
    """Writes the run configuration as it ran: the model fields of the model actually built."""
    record = json.loads(config.to_json())
    for field in dataclasses.fields(cfg):
        if field.name in record["model"]:
            record["model"][field.name] = getattr(cfg, field.name)
    record["weights"] = {"source": weights.source, "step": weights.step}
    atomic_files.write_json(record, path)


def _step_keys(cfg: ModelConfig) -> tuple[str, ...]:
    """Batch keys the steps read (Stage I never reads 3D; refine back-projects with `cam`)."""
    if cfg.stage == "pretrain":
        return ("input_2d",)
    return ("input_2d", "gt_3d", "cam") if cfg.refine else ("input_2d", "gt_3d")


def _pipelines(config, cfg: ModelConfig, mesh, train_ds, test_ds):
    """The train and test `Pipeline`s; logs the device memory the data takes."""
    d, keys = config.data, _step_keys(cfg)
    with_3d = cfg.stage != "pretrain"
    pipes = []
    for ds in (train_ds, test_ds):
        if ds is None:
            pipes.append(None)
            continue
        pipes.append(
            pipeline.Pipeline(
                ds, mesh, mode=d.pipeline, keys=keys, with_3d=with_3d, prefetch=d.prefetch
            )
        )
        if d.pipeline == "device":
            mb = pipeline.device_bytes(ds, with_3d) / 2**20
            split = "train" if ds.train else "test"
            logging.info("%s data on every device: %.1f MiB (%d windows)", split, mb, len(ds))
    return pipes


def _datasets(config, cfg: ModelConfig):
    """Test and train windows at the frame count of the model that runs (its weights')."""
    d, with_3d = config.data, cfg.stage != "pretrain"
    test_seqs = load_sequences(d, "test")
    test_ds = WindowDataset(
        test_seqs,
        frames=cfg.frames,
        tds=d.tds,
        train=False,
        with_3d=with_3d,
    )
    train_ds = None
    if config.mode == "train":
        train_ds = WindowDataset(
            load_sequences(d, "train"),
            frames=cfg.frames,
            tds=d.tds,
            train=True,
            flip_augment=d.flip_augment,
            stride=d.stride,
            with_3d=with_3d,
        )
    return test_seqs, test_ds, train_ds


def build_run(config: ml_collections.ConfigDict, workdir: Path, explicit=frozenset()) -> Run:
    """Loads the weights and the data, builds the model and compiles the steps for `config`.

    Args:
      config: the run configuration.
      workdir: the run's directory (created).
      explicit: dotted names of the fields the user set on the command line; a size among
        them that the loaded weights contradict is an error (`weights.adopt_sizes`).
    """
    check_config(config)
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = sharding.make_mesh()
    training = config.mode == "train"
    if training:
        sharding.check_batch_size(config.optim.batch_size, mesh)
    rngs = nnx.Rngs(params=config.seed, dropout=config.seed + 1)
    # The weights first: their sizes decide the windows and masks (frames, joints).
    loaded = weights_lib.initial_model(config, model_config(config), rngs, explicit)
    model, cfg = loaded.model, loaded.cfg
    if jax.process_index() == 0:  # one writer (the workdir is shared by the processes)
        _record_config(config, cfg, loaded, workdir / "config.json")
    test_seqs, test_ds, train_ds = _datasets(config, cfg)
    step_cfg = step_config(config, test_seqs, cfg)
    tx = _make_tx(config, model) if training else optax.identity()
    model.eval()
    eval_graphdef = nnx.split(model, nnx.Param, nnx.BatchStat, ...)[0]
    model.train()
    if training and config.init.freeze:
        from aptpose_jax import convert

        convert.freeze_batchnorms(model)  # frozen encoders keep running stats (§2.5, Q27)
    graphdef, params, batch_stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    params, batch_stats = sharding.put_replicated((params, batch_stats), mesh)
    rep = sharding.replicated(mesh)
    train_step = jax.jit(
        steps.make_train_step(graphdef, rest, step_cfg, tx),
        donate_argnums=0,
        out_shardings=(rep, rep),
    )
    # Replicated predictions: every process can read the whole batch (gathered over processes).
    eval_step = jax.jit(steps.make_eval_step(eval_graphdef, rest, step_cfg), out_shardings=rep)
    train_pipe, test_pipe = _pipelines(config, cfg, mesh, train_ds, test_ds)
    run = Run(
        config=config,
        workdir=workdir,
        mesh=mesh,
        model_cfg=cfg,
        step_cfg=step_cfg,
        train_ds=train_ds,
        test_ds=test_ds,
        test_seqs=test_seqs,
        graphdef=graphdef,
        eval_graphdef=eval_graphdef,
        rest=rest,
        params=params,
        batch_stats=batch_stats,
        tx=tx,
        train_step=train_step,
        eval_step=eval_step,
        checkpoints=checkpointing.RunCheckpoints(workdir, config.checkpoint.keep)
        if training
        else None,
        base_key=jax.random.key(config.seed),
        weights_source=loaded.source,
        weights_step=loaded.step,
        train_pipe=train_pipe,
        test_pipe=test_pipe,
    )
    return run
