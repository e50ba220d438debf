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

from aptpose_jax import checkpointing, evaluate, sharding, steps
from aptpose_jax.datasets import load_sequences, skeleton
from aptpose_jax.datasets.windows import WindowDataset
from aptpose_jax.masking import MaskSpec
from aptpose_jax.models import ModelConfig, build_model
from aptpose_jax.models import io as model_io
from aptpose_jax.optim import torch_amsgrad


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
    """The model's static configuration from a run configuration."""
    m = config.model
    return ModelConfig(
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


def step_config(config, seqs) -> steps.StepConfig:
    root, (mask_l, mask_r), (unflip_l, unflip_r) = _dataset_lists(config, seqs)
    spec = MaskSpec(
        frames=config.model.frames,
        temporal_ratio=config.masks.temporal_ratio,
        joints_per_frame=config.masks.joints_per_frame,
        bones_per_frame=config.masks.bones_per_frame,
        joints_left=tuple(mask_l),
        joints_right=tuple(mask_r),
        bone_pairs=skeleton.H36M_BONE_PAIRS,
        n_joints=config.model.n_joints,
        per_sample=config.masks.per_sample,
    )
    return steps.StepConfig(
        stage=config.model.stage,
        mask_spec=spec,
        masks_in_eval=config.masks.in_eval,
        loss_weights=tuple(config.loss.weights),
        velocity_weight=config.loss.velocity,
        root=root,
        bone_pairs=skeleton.H36M_BONE_PAIRS,
        joints_left=unflip_l,
        joints_right=unflip_r,
        test_flip=config.data.test_flip,
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
        keys = ("input_2d",) if self.model_cfg.stage == "pretrain" else ("input_2d", "gt_3d")
        return {k: batch[k] for k in keys}

    def save(self, state, epoch: int, best_p1: float, *, is_best: bool, epoch_done=False):
        meta = {
            "epoch": epoch,
            "epoch_done": epoch_done,
            "step": int(state.step),
            "best_p1": best_p1,
            "seed": self.config.seed,
            "model_config": dataclasses.asdict(self.model_cfg),
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


def _model_from_workdir(workdir: str, rngs: nnx.Rngs):
    """Rebuilds the model of a training workdir (its best, else latest, checkpoint) or of a
    converter output directory (`python -m aptpose_jax.convert --out DIR`)."""
    if (Path(workdir) / model_io.CONFIG_FILE).is_file():
        model, cfg = model_io.load_model(workdir)
        logging.info("loaded converted %s model from %s", cfg.stage, workdir)
        return model, cfg
    directory, step, meta = checkpointing.read_run_meta(workdir, "best")
    cfg = ModelConfig(**meta["model_config"])
    model = build_model(cfg, rngs)
    _, params, batch_stats, _ = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    tree = checkpointing.restore_model_tree(
        directory, step, {"params": params, "batch_stats": batch_stats}
    )
    nnx.update(model, tree["params"], tree["batch_stats"])
    logging.info("loaded %s model from %s (step %d)", cfg.stage, directory, step)
    return model, cfg


def _initial_model(config, cfg: ModelConfig, rngs: nnx.Rngs):
    """Fresh model, fine-tuning init from Stage I, or the full model for evaluation."""
    from aptpose_jax import convert  # torch is only needed for .pth files

    init = config.init
    if init.from_workdir and init.from_pth:  # demo configs preset from_workdir
        logging.warning("init.from_pth given: ignoring init.from_workdir=%s", init.from_workdir)
    source = None
    if init.from_pth:
        # The visible-frame count of Stage I is not stored in a .pth: take this run's.
        extra = {"temporal_ratio": cfg.temporal_ratio} if cfg.stage == "pretrain" else {}
        source, source_cfg = convert.load_pth(init.from_pth, **extra)
    elif init.from_workdir:
        source, source_cfg = _model_from_workdir(init.from_workdir, rngs)
    if source is None:
        if config.mode == "eval":
            raise ValueError(
                "evaluation needs weights: set --config.init.from_workdir=DIR "
                "(a training workdir) or --config.init.from_pth=FILE.pth"
            )
        return build_model(cfg, rngs), cfg
    if source_cfg.stage == "pretrain" and cfg.stage != "pretrain":
        model = build_model(cfg, rngs)
        keys = convert.transfer_stage1_to_stage2(source, model)
        logging.info("initialised %d Stage II tensors from Stage I (§2.6)", len(keys))
        return model, cfg
    if config.mode == "eval" or source_cfg.stage == cfg.stage:
        if source_cfg != dataclasses.replace(
            cfg, dtype=source_cfg.dtype, temporal_ratio=source_cfg.temporal_ratio
        ):
            logging.info("model sizes taken from the loaded weights: %s", source_cfg)
        if source_cfg.dtype == cfg.dtype:
            return source, source_cfg
        target_cfg = dataclasses.replace(source_cfg, dtype=cfg.dtype)  # same weights, new dtype
        model = build_model(target_cfg, rngs)
        nnx.update(model, *nnx.state(source, nnx.Param, nnx.BatchStat))
        return model, target_cfg
    raise ValueError(f"cannot initialise a {cfg.stage!r} model from {source_cfg.stage!r} weights")


def _make_tx(config, model) -> optax.GradientTransformation:
    """PyTorch's Adam(amsgrad=True) direction (unit lr; the step applies the lr, §4.2)."""
    tx = torch_amsgrad(b1=0.9, b2=0.999, eps=1e-8)
    if not config.init.freeze:
        return tx
    from aptpose_jax import convert

    labels = convert.freeze_labels(model)  # "frozen" / "trainable" per parameter (Q27)
    return optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()}, labels)


def build_run(config: ml_collections.ConfigDict, workdir: Path) -> Run:
    """Loads data, builds the model and compiles the steps for `config`."""
    sharding.maybe_initialize_distributed()
    workdir.mkdir(parents=True, exist_ok=True)
    evaluate.write_json(json.loads(config.to_json()), workdir / "config.json")
    mesh = sharding.make_mesh()
    training = config.mode == "train"
    if training:
        sharding.check_batch_size(config.optim.batch_size, mesh)
    test_seqs = load_sequences(config.data, "test")
    d = config.data
    test_ds = WindowDataset(
        test_seqs, frames=config.model.frames, tds=d.tds, train=False, test_flip=d.test_flip
    )
    train_ds = None
    if training:
        train_ds = WindowDataset(
            load_sequences(d, "train"),
            frames=config.model.frames,
            tds=d.tds,
            train=True,
            flip_augment=d.flip_augment,
            stride=d.stride,
        )
    rngs = nnx.Rngs(params=config.seed, dropout=config.seed + 1)
    model, cfg = _initial_model(config, model_config(config), rngs)
    step_cfg = step_config(config, test_seqs)
    tx = _make_tx(config, model) if training else optax.identity()
    model.eval()
    eval_graphdef = nnx.split(model, nnx.Param, nnx.BatchStat, ...)[0]
    model.train()
    if training and config.init.freeze:
        from aptpose_jax import convert

        convert.freeze_batchnorms(model)  # frozen encoders keep running stats (§2.5, Q27)
    graphdef, params, batch_stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    params, batch_stats = sharding.put_replicated((params, batch_stats), mesh)
    rep, data = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    train_step = jax.jit(
        steps.make_train_step(graphdef, rest, step_cfg, tx),
        donate_argnums=0,
        out_shardings=(rep, rep),
    )
    eval_step = jax.jit(steps.make_eval_step(eval_graphdef, rest, step_cfg), out_shardings=data)
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
    )
    return run
