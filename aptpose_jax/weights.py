"""The initial weights of a run: fresh, Stage I -> II transfer, or a trained model to go on with.

`initial_model(config, cfg, rngs, explicit)` loads what `config.init` names (a `.pth` file,
a training workdir or a converter output directory) and returns the model that will run:

* its *sizes* (`SIZE_FIELDS`, and the Stage II variant in an evaluation) come from the loaded
  weights, so data windows, masks and `config.json` follow them; a size the user set on the
  command line (`explicit`) that disagrees is an error;
* every other model field (dropout, dtype, refine, temporal ratio) comes from the run's
  configuration;
* Stage I weights in an evaluation of Stage II are an error (their Stage II heads would be
  random).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from absl import logging
from flax import nnx

from aptpose_jax import checkpointing
from aptpose_jax.errors import ConfigError, WeightsError
from aptpose_jax.models import ModelConfig, build_model
from aptpose_jax.models import io as model_io

SIZE_FIELDS = ("frames", "layers", "channel", "d_hid", "sem_layers", "n_joints")
_STAGE_II = ("lifter", "lifter_nomask")


@dataclasses.dataclass
class Weights:
    """A run's initial model and where its weights came from.

    Attributes:
      model: the model, built with `cfg`.
      cfg: the configuration of the model that runs.
      source: the file or directory the weights came from ("" for a fresh model).
      step: the training step of those weights, when recorded (a workdir's checkpoint).
    """

    model: nnx.Module
    cfg: ModelConfig
    source: str = ""
    step: int | None = None


def model_from_workdir(workdir: str, rngs: nnx.Rngs) -> tuple[nnx.Module, ModelConfig, int | None]:
    """Rebuilds the model of a training workdir (its best, else latest, checkpoint) or of a
    converter output directory (`python -m aptpose_jax.convert --out DIR`).

    Returns:
      (model, its config, the checkpoint's step or None for a converted model).
    """
    if (Path(workdir) / model_io.CONFIG_FILE).is_file():
        model, cfg = model_io.load_model(workdir)
        logging.info("loaded converted %s model from %s", cfg.stage, workdir)
        return model, cfg, None
    directory, step, meta = checkpointing.read_run_meta(workdir, "best")
    cfg = ModelConfig(**meta["model_config"])
    model = build_model(cfg, rngs)
    _, params, batch_stats, _ = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    tree = checkpointing.restore_model_tree(
        directory, step, {"params": params, "batch_stats": batch_stats}
    )
    nnx.update(model, tree["params"], tree["batch_stats"])
    logging.info("loaded %s model from %s (step %d)", cfg.stage, directory, step)
    return model, cfg, step


def adopt_sizes(cfg: ModelConfig, loaded: ModelConfig, explicit, source: str) -> ModelConfig:
    """`cfg` with the sizes of the loaded weights.

    Raises:
      ConfigError: a size the user set explicitly (`explicit` holds "model.<field>" names)
        disagrees with the weights.
    """
    conflicts = [
        f"model.{f}={getattr(cfg, f)} (the weights have {getattr(loaded, f)})"
        for f in SIZE_FIELDS
        if f"model.{f}" in explicit and getattr(cfg, f) != getattr(loaded, f)
    ]
    if conflicts:
        raise ConfigError(
            f"--config.{', --config.'.join(conflicts)} conflicts with the weights in {source}: "
            "sizes come from the weights, so drop the override or load other weights"
        )
    sizes = {f: getattr(loaded, f) for f in SIZE_FIELDS}
    changed = {f: v for f, v in sizes.items() if getattr(cfg, f) != v}
    if changed:
        logging.info("model sizes from the weights in %s: %s", source, changed)
    return dataclasses.replace(cfg, **sizes)


def _copy_weights(source: nnx.Module, target: nnx.Module) -> None:
    """Copies parameters and BatchNorm statistics; subtrees `target` lacks (refine) are left."""
    for kind in (nnx.Param, nnx.BatchStat):
        state = nnx.state(target, kind)
        wanted = nnx.to_pure_dict(state)
        values = {k: v for k, v in nnx.to_pure_dict(nnx.state(source, kind)).items() if k in wanted}
        nnx.replace_by_pure_dict(state, values)
        nnx.update(target, state)


def _same_stage_model(config, cfg, source, loaded, explicit, where, rngs) -> Weights:
    """The loaded Stage II (or Stage I) model, rebuilt when a non-size field differs."""
    stage = loaded.stage if config.mode == "eval" else cfg.stage
    target_cfg = adopt_sizes(dataclasses.replace(cfg, stage=stage), loaded, explicit, where)
    if target_cfg.stage != cfg.stage:
        logging.info("the weights in %s are a %s model (config: %s)", where, stage, cfg.stage)
    if target_cfg.refine and not loaded.refine:
        raise WeightsError(
            f"model.refine=True but the weights in {where} have no refine module (§2.8): "
            "add the refine weights (--config.init.refine_pth=R.pth, or convert --refine_pth) "
            "or set --config.model.refine=False"
        )
    if target_cfg == loaded:
        return Weights(source, target_cfg)
    model = build_model(target_cfg, rngs)  # same weights; dropout, dtype, refine of the run
    _copy_weights(source, model)
    return Weights(model, target_cfg)


def initial_model(config, cfg: ModelConfig, rngs: nnx.Rngs, explicit=frozenset()) -> Weights:
    """Fresh model, fine-tuning init from Stage I, or the loaded model (see module docstring).

    Args:
      config: the run configuration (`init.*`, `mode`).
      cfg: the model configuration from the run configuration (`run_builder.model_config`).
      rngs: initialisers of a fresh model.
      explicit: dotted field names the user set on the command line.
    """
    from aptpose_jax import convert  # torch is only needed for .pth files

    init = config.init
    if init.from_workdir and init.from_pth:  # demo configs preset from_workdir
        logging.warning("init.from_pth given: ignoring init.from_workdir=%s", init.from_workdir)
    if init.from_pth:
        # The visible-frame count of Stage I is not stored in a .pth: take this run's.
        extra = {"temporal_ratio": cfg.temporal_ratio} if cfg.stage == "pretrain" else {}
        refine_pth = init.refine_pth or None  # §2.8 refine weights live in their own file
        source, loaded = convert.load_pth(init.from_pth, refine_pth=refine_pth, **extra)
        where, step = str(init.from_pth), None
    elif init.from_workdir:
        source, loaded, step = model_from_workdir(init.from_workdir, rngs)
        where = str(init.from_workdir)
    elif config.mode == "eval":
        raise ConfigError(
            "evaluation needs weights: set --config.init.from_workdir=DIR "
            "(a training workdir) or --config.init.from_pth=FILE.pth"
        )
    else:
        return Weights(build_model(cfg, rngs), cfg)
    if loaded.stage == "pretrain" and cfg.stage != "pretrain":
        if config.mode == "eval":
            raise WeightsError(
                f"{where} holds Stage I (pretrain) weights; a Stage II evaluation needs Stage II "
                "weights (fine-tune first: configs/h36m_finetune.py with init.from_workdir/pth)"
            )
        target_cfg = adopt_sizes(cfg, loaded, explicit, where)
        model = build_model(target_cfg, rngs)
        keys = convert.transfer_pretrain_to_lifter(source, model)
        logging.info("initialised %d Stage II tensors from Stage I (§2.6)", len(keys))
        return Weights(model, target_cfg, where, step)
    stage_ii_pair = loaded.stage in _STAGE_II and cfg.stage in _STAGE_II
    if loaded.stage == cfg.stage or (config.mode == "eval" and stage_ii_pair):
        weights = _same_stage_model(config, cfg, source, loaded, explicit, where, rngs)
        return dataclasses.replace(weights, source=where, step=step)
    raise WeightsError(
        f"cannot initialise a {cfg.stage!r} model from the {loaded.stage!r} weights in {where}"
    )
