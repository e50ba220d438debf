"""Default run configuration shared by every file in `configs/` (`aptpose_jax/configs/`).

A run configuration is plain data (an `ml_collections.ConfigDict` with a locked structure,
so a typo in a `--config.x.y=...` override is an error). Each file in `configs/` starts from
`base_config()`, sets what its command in the APTPose README sets, and calls `apply_demo`
when run with the `demo` argument (`--config=h36m_pretrain:demo`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import ml_collections

from aptpose_jax.errors import ConfigError

# The demo data is generated on first use into `data/demo` of the current directory (what
# `make demo` expects; any other place: --config.data.root=DIR).
DEMO_DATA_ROOT = "data/demo"
# Stands for the run's --workdir in `init.from_workdir` (`resolve_paths`).
WORKDIR = "{workdir}"


def base_config() -> ml_collections.ConfigDict:
    """Returns the reference defaults (APTPose `common/opt.py`, §4.5) as a ConfigDict."""
    c = ml_collections.ConfigDict()
    c.mode = "train"  # "train" (train + evaluate every epoch) or "eval" (one evaluation pass)
    c.seed = 1  # the reference forces manualSeed = 1 (§4.1)
    # "check": resuming a workdir whose checkpoint has another data order or step accounting
    # (seed, batch size, frames, tds, ...) is refused; "force": resume anyway.
    c.resume = "check"

    c.model = ml_collections.ConfigDict()
    c.model.stage = "lifter"  # "pretrain" (Stage I), "lifter" (Stage II), "lifter_nomask" (§2.7)
    c.model.frames = 243
    c.model.layers = 4
    c.model.channel = 256
    c.model.d_hid = 512
    c.model.sem_layers = 1
    c.model.n_joints = 17
    c.model.refine = False
    c.model.dropout = 0.1
    c.model.cloned_init = True  # fresh models start with the reference's cloned layers (Q9)

    c.data = ml_collections.ConfigDict()
    c.data.dataset = "h36m"  # "h36m" or "mpi_inf_3dhp"
    c.data.root = "data/h36m"
    c.data.keypoints = "cpn_ft_h36m_dbb"
    c.data.subjects_train = "S1,S5,S6,S7,S8"
    c.data.subjects_test = "S9,S11"
    c.data.actions = "*"
    c.data.downsample = 1
    c.data.subset = 1.0
    c.data.tds = 1
    c.data.stride = 1
    c.data.flip_augment = True
    c.data.test_flip = True  # flip test-time augmentation (§1.10)
    c.data.source = "npz"  # "npz" (official files) or "tfds" (built TFDS dataset)
    c.data.tfds_data_dir = ""
    c.data.demo = False  # generate the demo files into `root` when missing
    c.data.drop_remainder = True  # training: drop the last partial batch (one compiled shape)
    c.data.pipeline = "device"  # "device": data placed once, steps gather; "host": numpy gather
    c.data.prefetch = 2  # host pipeline: batches kept ready by its background thread (>= 2)

    c.masks = ml_collections.ConfigDict()
    c.masks.temporal_ratio = 0.0  # -tmr
    c.masks.joints_per_frame = 0  # -smn
    c.masks.bones_per_frame = 1  # -bmn
    c.masks.per_sample = False  # False = one mask set per batch (Q1)
    c.masks.in_eval = True  # Stage II masks in evaluation too (Q2, reference behaviour)

    c.optim = ml_collections.ConfigDict()
    c.optim.batch_size = 160
    c.optim.lr = 1e-3
    c.optim.lr_decay = 0.95  # -lrd, per epoch
    c.optim.lr_decay_large = 0.5
    c.optim.large_decay_epoch = 80
    c.optim.num_epochs = 79  # the reference loops epochs 1..nepoch-1 with nepoch = 80
    c.optim.max_steps_per_epoch = -1  # > 0 caps an epoch (demo and smoke runs)
    c.optim.warmup_steps = 0  # > 0: linear lr warm-up over this many steps (not in the reference)

    c.loss = ml_collections.ConfigDict()
    c.loss.weights = (1.0, 1.0, 0.5, 0.5)  # pose_seq, pose, bones_seq, bones (§3.3)
    c.loss.velocity = 0.0  # -w_v (3DHP only)

    c.init = ml_collections.ConfigDict()
    c.init.from_workdir = ""  # Stage I workdir (finetune) or Stage II workdir (eval)
    c.init.from_pth = ""  # official .pth file (Stage I for finetune, Stage II for eval)
    c.init.refine_pth = ""  # with from_pth and model.refine: the refine module's .pth (§2.8)
    c.init.freeze = False  # --freeze (§2.5, Q27)

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 160
    c.eval.every_epochs = 1  # 0: never evaluate while training
    c.eval.max_batches = -1  # > 0 caps the evaluation pass (smoke runs)

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.keep = 2  # latest-k
    c.checkpoint.every_steps = 0  # > 0: also save inside an epoch every this many steps

    c.log = ml_collections.ConfigDict()
    c.log.every_steps = 50
    c.log.tensorboard = True
    c.log.progress_bar = True

    # Dot precision: "float32" (true float32 on every backend: no TF32 on GPUs), "tf32" (the
    # backend's fast float32 dot, TF32 on NVIDIA GPUs) or "bfloat16" (bf16 dots, fp32 params).
    c.compute_dtype = "float32"
    # Kernel choices, "auto" = the backend's default (models/kernels.py); config.json records
    # what ran. The environment variable APTPOSE_KERNELS=cpu|plain overrides kernels.set.
    c.kernels = ml_collections.ConfigDict()
    c.kernels.set = "auto"  # "cpu" (XLA:CPU formulations) or "plain"
    c.kernels.dropout = "auto"  # "hash" (counter hash, never stored) or "threefry"
    c.kernels.attention = "auto"  # "xla", "pallas" (fused kernel) or "cudnn" (no dropout)
    # XLA's persistent compilation cache: "auto" ($JAX_COMPILATION_CACHE_DIR, else
    # ~/.cache/aptpose_jax/xla), "off", or a directory. A second run or a resume compiles nothing.
    c.compile_cache = "auto"
    c.deterministic = False  # GPU: deterministic reductions (bitwise resume), slower (README)
    return c


def apply_demo(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks a configuration so it runs in a few minutes on 2 CPU cores on the demo data.

    The demo data (generated on first use into `data/demo`) has the official file formats,
    so the same loaders run; only sizes and epoch counts shrink.
    """
    c.data.root = DEMO_DATA_ROOT
    c.data.demo = True
    c.data.source = "npz"
    c.model.frames = 27
    c.model.layers = min(c.model.layers, 3)
    c.model.channel = 64
    c.model.d_hid = 128
    c.optim.batch_size = 64
    c.optim.num_epochs = 4
    c.optim.max_steps_per_epoch = 100
    c.eval.batch_size = 128
    c.eval.max_batches = -1  # the whole demo test set: every action in the table
    c.log.every_steps = 20
    return c


def apply_h36m_demo(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`make demo` (the Human3.6M configs with `:demo`): `apply_demo`, then a run whose model
    lifts a recognisable person within about 5 minutes of 2 CPU cores.

    9-frame windows (the reference's smallest, strides 1-3-3) make a step ~3x cheaper than 27,
    so Stage II gets 2000 steps; the reference's learning rates (1e-4 / 7e-4) are meant for 79
    long epochs, so the demo raises them (Stage I 1e-3, Stage II 1.5e-3). With the reference's
    values (27 frames, 400 steps each) Stage II stalls at the mean pose (P1 ~196 mm).
    """
    apply_demo(c)
    c.model.frames = 9
    if c.model.stage == "pretrain":
        c.optim.lr = 1e-3
    else:
        c.optim.lr = 1.5e-3
        c.optim.num_epochs = 10
        c.optim.max_steps_per_epoch = 200
    return c


def parse_arg(arg: str | None, allowed: tuple[str, ...]) -> set[str]:
    """Splits a config argument such as "gt,demo" and rejects unknown words.

    The error names the config file that called (its `__file__`), so each run book keeps its
    one-line call.
    """
    words = {w.strip() for w in (arg or "").split(",") if w.strip()}
    unknown = sorted(words - set(allowed))
    if unknown:
        caller = sys._getframe(1).f_globals.get("__file__") or "the config"
        name = Path(caller).stem
        raise ConfigError(
            f"unknown config argument {', '.join(map(repr, unknown))} for {name}; allowed: "
            f"{', '.join(allowed)}, comma-separated (e.g. --config={name}:{allowed[0]})"
        )
    return words


def sibling_workdir(name: str) -> str:
    """A workdir beside the run's own `--workdir` (`{workdir}/../NAME`, see `resolve_paths`)."""
    return f"{WORKDIR}/../{name}"


def resolve_paths(config: ml_collections.ConfigDict, workdir: str | Path) -> None:
    """Replaces `{workdir}` in `init.from_workdir` by the run's workdir (in place).

    The demo configs chain their stages by it (finetune starts from the sibling `pretrain`
    of its own `--workdir`), so they work from any current directory.
    """
    if WORKDIR in config.init.from_workdir:
        path = config.init.from_workdir.replace(WORKDIR, str(Path(workdir).resolve()))
        config.init.from_workdir = os.path.normpath(path)
