"""Throughput of the OFFICIAL PyTorch Stage II code, to put beside `bench_train.py` on one device.

Imports the Stage II `Model` (model/stageII/stmo_Arc3_Geo1_Freeze3_MaskII.py) and the loss
helpers (common/utils.py: `mpjpe_cal`, `get_BoneVecbypose3d`) from a checkout of
github.com/wenwen12321/APTPose given with `--official PATH`; nothing of that code is copied here.
The official model is built from a plain namespace of its options (its argparse `opts` is not
parsed: it would create checkpoint folders), on the device chosen with `--device`, without
`nn.DataParallel` (one device).

What is timed follows APTPose `run.py` (Stage II, README fine-tuning command: spatial mask
count 0, temporal rate 0, no refine, no freeze), on SYNTHETIC random data resident on the device
(random 2D windows, 3D poses and scales; no data loader):

* train: the five masks drawn on the host with numpy / Python `random` as `run.py` draws them
  for every batch (temporal mask moved to the device), `model.train()`, forward, the official
  loss (MPJPE of the all-frames pose vs the root-zeroed target + MPJPE of the centre frame
  + 0.5 x the two bone-vector MPJPEs, outputs scaled by the batch's scale), `zero_grad`,
  backward, `torch.optim.Adam(amsgrad=True)` step, and the loss read back to the host (run.py
  logs it every step);
* eval: the masks drawn likewise, `model.eval()`, no grad, flip TTA as `run.py` test mode: the
  model runs on the flipped and the original window (two forward passes of B), the flipped
  pose outputs get x negated and left/right joints swapped, both are averaged (the bone-vector
  outputs are averaged without un-flipping, Q13).

Figures per (impl, dtype, batch, mode), one JSON line each, field names as `bench_train.py`:

* step_ms: median over `--steps` steps of the whole step, waited for; input_ms: its host part
  (drawing the masks, temporal mask to the device); device_ms: the rest (CUDA events on CUDA);
  samples_per_s = batch / step_ms; h36m_epoch_s (train) as bench_train projects it;
* busy_ms: mean step of `--steps` steps dispatched back to back with one mask set drawn
  beforehand and no per-step read-back: the device's own time per step;
* warmup_s: the `--warmup` untimed steps; compile_s: the first step's extra cost over the
  median (torch.compile compiles during the first steps; eager: allocator and kernel warm-up).

impl "official-eager" runs the model as written; "official-compile" wraps it in
`torch.compile` (loss and optimizer stay eager, as a user adding one line would get). A figure
that fails prints a JSON line with an "error" field and the run goes on. dtype "float32" is
float32 with TF32 off for matmuls and cuDNN unless `--tf32` (recorded as `allow_tf32` and
`cudnn_allow_tf32`); "bfloat16" is `torch.autocast(bfloat16)` around forward and loss (weights
and optimizer in float32), the mixed precision a PyTorch user would use. cuDNN is set as
`run.py` sets it (benchmark off, deterministic on) and recorded.

  # smoke run on the CPU against a checkout:
  .venv/bin/python experiments/bench_reference.py --official /tmp/aptpose_official \
      --frames 27 --layers 2 --channel 32 --d_hid 64 --batches 4 --steps 2
  # one GPU, beside bench_train's GPU run (torch with CUDA in the same environment):
  python experiments/bench_reference.py --official /path/to/APTPose --device auto \
      --batches 160,1024 --dtypes float32,bfloat16 --impls eager,compile --steps 20 --warmup 3
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import os
import pathlib
import random
import statistics
import subprocess
import sys
import time
import types

import numpy as np
import torch

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
for _path in (REPO_ROOT, REPO_ROOT / "experiments"):  # run as a file, or loaded by the tests
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import measure  # noqa: E402

from aptpose_jax.datasets.skeleton import (  # noqa: E402
    H36M_BONE_PAIRS,
    H36M_JOINTS_LEFT,
    H36M_JOINTS_RIGHT,
)
from aptpose_jax.models.config import stride_num  # noqa: E402

MODEL_FILE = "model/stageII/stmo_Arc3_Geo1_Freeze3_MaskII.py"
UTILS_FILE = "common/utils.py"
IMPLS = {"eager": "official-eager", "compile": "official-compile"}
N_JOINTS = 17
LR = 7e-4  # the README's Stage II learning rate


class OfficialCodeError(Exception):
    """The folder given with --official is missing or is not an APTPose checkout."""


def load_official(path: str) -> types.SimpleNamespace:
    """The official Stage II `Model` and loss helpers, imported from the checkout at `path`."""
    root = pathlib.Path(path).expanduser().resolve()
    if not root.is_dir():
        raise OfficialCodeError(f"--official {path}: no such folder")
    missing = [f for f in (MODEL_FILE, UTILS_FILE) if not (root / f).is_file()]
    if missing:
        raise OfficialCodeError(
            f"--official {path}: not a checkout of wenwen12321/APTPose "
            f"(missing {', '.join(missing)})"
        )
    sys.path.insert(0, str(root))  # the official modules import `model.block...` from there
    try:
        model_mod = importlib.import_module(MODEL_FILE[:-3].replace("/", "."))
        utils_mod = importlib.import_module(UTILS_FILE[:-3].replace("/", "."))
    except ImportError as e:
        raise OfficialCodeError(f"--official {path}: its code does not import ({e})") from e
    commit = None
    if (root / ".git").exists():  # a git checkout (not an exported tree inside another repo)
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                             capture_output=True, text=True)  # fmt: skip
        commit = out.stdout.strip() or None
    return types.SimpleNamespace(
        Model=model_mod.Model,
        mpjpe=utils_mod.mpjpe_cal,
        bone_vectors=utils_mod.get_BoneVecbypose3d,
        commit=commit,
    )


def official_options(frames: int, layers: int, channel: int, d_hid: int) -> types.SimpleNamespace:
    """The `opt` fields the official Stage II model reads (README fine-tuning command)."""
    return types.SimpleNamespace(
        frames=frames, layers=layers, channel=channel, d_hid=d_hid, pad=(frames - 1) // 2,
        stride_num=list(stride_num(frames)), n_joints=N_JOINTS, out_joints=N_JOINTS,
        in_channels=2, out_channels=3, sem_layers=1, spatial_mask_num=0, temporal_mask_rate=0.0,
    )  # fmt: skip


def draw_masks(opt, device) -> tuple:
    """One batch's masks, drawn as `run.py` (Stage II) draws them: numpy / Python `random`.

    Returns (temporal (F,) bool tensor on `device`, joint, bone, limb, half-body (F, J) numpy
    bool arrays). Python loops over frames, as the official code runs them every batch.
    """
    f, left, right = opt.frames, list(H36M_JOINTS_LEFT), list(H36M_JOINTS_RIGHT)
    n_masked = int(f * opt.temporal_mask_rate)
    temporal = np.hstack([np.zeros(f - n_masked), np.ones(n_masked)]).flatten()
    np.random.seed()
    np.random.shuffle(temporal)
    temporal = torch.from_numpy(temporal).to(torch.bool).to(device)
    joint, bone, limb, half = (np.zeros((f, N_JOINTS), dtype=bool) for _ in range(4))
    limbs = (left[:3], left[3:], right[:3], right[3:])
    for k in range(f):
        joint[k, random.sample(range(0, 16), opt.spatial_mask_num)] = True
    for k in range(f):
        for i in random.sample(range(0, 16), 1):
            bone[k, list(H36M_BONE_PAIRS[i])] = True
    for k in range(f):
        limb[k, limbs[random.sample(range(0, 4), 1)[0]]] = True
    for k in range(f):
        half[k, left if random.sample(range(0, 2), 1) == [0] else right] = True
    return temporal, joint, bone, limb, half


def synthetic_batch(b: int, f: int, device, seed: int = 0) -> dict:
    """Random 2D windows (B, F, J, 2), their flipped copies, 3D poses (B, F, J, 3), scales (B,)."""
    g = torch.Generator().manual_seed(seed)
    pose_2d = torch.rand(b, f, N_JOINTS, 2, generator=g) * 2 - 1  # (B, F, J, 2)
    flipped = pose_2d.clone()
    flipped[..., 0] *= -1
    lr = list(H36M_JOINTS_LEFT) + list(H36M_JOINTS_RIGHT)
    flipped[:, :, lr] = flipped[:, :, list(H36M_JOINTS_RIGHT) + list(H36M_JOINTS_LEFT)]
    batch = dict(
        input_2d=pose_2d,
        input_2d_tta=torch.stack([pose_2d, flipped], dim=1),  # (B, 2, F, J, 2) as the test loader
        gt_3d=torch.randn(b, f, N_JOINTS, 3, generator=g) * 0.3,  # (B, F, J, 3)
        scale=torch.rand(b, generator=g) * 0.5 + 0.75,  # (B,)
    )
    return {k: v.to(device) for k, v in batch.items()}


def _to_model_input(x2d, opt):
    n = x2d.shape[0]
    return x2d.view(n, -1, opt.n_joints, opt.in_channels, 1).permute(0, 3, 1, 2, 4)  # (B,2,F,J,1)


def _scaled(out, scale, joints: int, opt):
    """(B, 3, F', joints, 1) model output -> (B, F', joints, 3) times the batch's scale."""
    n = out.shape[0]
    out = out.permute(0, 2, 3, 4, 1).contiguous().view(n, -1, joints, opt.out_channels)
    return out * scale.view(n, 1, 1, 1)


def official_loss(outputs, batch, off, opt):
    """`run.py`'s Stage II training loss (no refine): poses 1 + 1, bone vectors 0.5 + 0.5."""
    pose, pose_all, bone, bone_all = outputs
    n, j = batch["gt_3d"].shape[0], opt.out_joints
    gt = batch["gt_3d"]
    target = gt.clone()
    target[:, :, 0] = 0  # root-zeroed target, as run.py
    target_single = target[:, opt.pad].unsqueeze(1)  # (B, 1, J, 3)
    bones_gt = off.bone_vectors(gt.view(n, -1, j, 3))  # (B, F, J-1, 3)
    bones_gt_single = bones_gt[:, opt.pad].unsqueeze(1)
    scale = batch["scale"]
    pose, pose_all = _scaled(pose, scale, j, opt), _scaled(pose_all, scale, j, opt)
    bone, bone_all = _scaled(bone, scale, j - 1, opt), _scaled(bone_all, scale, j - 1, opt)
    poses = off.mpjpe(pose_all, target) + off.mpjpe(pose, target_single)
    return poses + 0.5 * off.mpjpe(bone_all, bones_gt) + 0.5 * off.mpjpe(bone, bones_gt_single)


def flip_tta(model, x_tta, masks, opt):
    """`run.py` test-mode flip TTA on (B, 2, F, J, 2): pose outputs un-flipped, all averaged."""
    left, right = list(H36M_JOINTS_LEFT), list(H36M_JOINTS_RIGHT)
    flip = model(_to_model_input(x_tta[:, 1], opt), *masks)
    for out in flip[:2]:  # (B, 3, F', J, 1): x negated, left/right swapped (not the bones, Q13)
        out[:, 0] *= -1
        out[:, :, :, left + right] = out[:, :, :, right + left]
    plain = model(_to_model_input(x_tta[:, 0], opt), *masks)
    return [(a + b) / 2 for a, b in zip(plain, flip, strict=True)]


class Bench:
    """One model + optimizer on one device; `step(mode)` runs one official step."""

    def __init__(self, off, opt, args, batch_size: int, dtype: str, impl: str):
        self.off, self.opt, self.device = off, opt, args.torch_device
        torch.manual_seed(0)
        self.model = off.Model(opt).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LR, amsgrad=True)
        self.forward = torch.compile(self.model) if impl == "compile" else self.model
        self.batch = synthetic_batch(batch_size, opt.frames, self.device)
        self.autocast = dtype == "bfloat16"

    def _cast(self):
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def run(self, mode: str, masks, read_back: bool = True):
        """One train step (returns the loss) or one flip-TTA evaluation (returns the pose)."""
        temporal, *spatial = masks
        if mode == "train":
            self.model.train()
            x = _to_model_input(self.batch["input_2d"], self.opt)
            with self._cast():
                outputs = self.forward(x, temporal, *spatial)
                loss = official_loss(outputs, self.batch, self.off, self.opt)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            return loss.detach().cpu().numpy() if read_back else loss
        self.model.eval()
        with torch.no_grad(), self._cast():
            pose = flip_tta(self.forward, self.batch["input_2d_tta"], masks, self.opt)[0]
        return pose.float().cpu().numpy() if read_back else pose


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(bench: Bench, mode: str, steps: int, warmup: int) -> dict:
    """Times `bench.run(mode)` (see the module docstring for the figures)."""
    dev, opt = bench.device, bench.opt
    cuda = dev.type == "cuda"
    t0 = time.perf_counter()
    bench.run(mode, draw_masks(opt, dev))
    _sync(dev)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(warmup):
        bench.run(mode, draw_masks(opt, dev))
    _sync(dev)
    warmup_s = time.perf_counter() - t0
    inp, tot, devs = [], [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        masks = draw_masks(opt, dev)
        _sync(dev)
        t1 = time.perf_counter()
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        bench.run(mode, masks)
        if cuda:
            end.record()
        _sync(dev)
        t2 = time.perf_counter()
        inp.append(t1 - t0)
        tot.append(t2 - t0)
        devs.append(start.elapsed_time(end) / 1e3 if cuda else t2 - t1)
    masks = draw_masks(opt, dev)
    t0 = time.perf_counter()  # the device's own time: one mask set, steps back to back
    for _ in range(steps):
        bench.run(mode, masks, read_back=False)
    _sync(dev)
    busy = (time.perf_counter() - t0) / steps
    ms = lambda xs: round(1e3 * statistics.median(xs), 2)  # noqa: E731
    return dict(step_ms=ms(tot), device_ms=ms(devs), input_ms=ms(inp), warmup_s=round(warmup_s, 2),
                busy_ms=round(1e3 * busy, 2),
                compile_s=round(max(0.0, first - statistics.median(tot)), 2))  # fmt: skip


def figures(mode: str, batch: int, times: dict) -> dict:
    """The reported row of one measurement (bench_train's names for the shared figures)."""
    rate = batch / (times["step_ms"] / 1e3)
    row = dict(mode=mode, samples_per_s=round(rate, 2), **times)
    if mode == "train":
        row["h36m_epoch_s"] = round(measure.H36M_EPOCH_WINDOWS / rate, 1)
    return row


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--official", required=True, help="checkout of wenwen12321/APTPose")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda")
    p.add_argument("--batches", default="160,1024", help="training batches, e.g. 160,1024")
    p.add_argument("--dtypes", default="float32", help="float32,bfloat16")
    p.add_argument("--impls", default="eager,compile", help="eager,compile")
    p.add_argument("--modes", default="train,eval")
    p.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after the first")
    p.add_argument("--frames", type=int, default=243)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--channel", type=int, default=256)
    p.add_argument("--d_hid", type=int, default=512)
    p.add_argument("--tf32", action="store_true", help="allow TF32 in fp32 matmuls and cuDNN")
    args = p.parse_args(argv)
    choices = (("dtypes", ("float32", "bfloat16")), ("impls", tuple(IMPLS)),
               ("modes", ("train", "eval")))  # fmt: skip
    for name, allowed in choices:
        for value in getattr(args, name).split(","):
            if value not in allowed:
                p.error(f"--{name}: unknown {value!r}; choose from {', '.join(allowed)}")
    if args.steps < 1 or not _ints(args.batches) or min(_ints(args.batches)) < 1:
        p.error("--steps and --batches must be positive")
    try:
        stride_num(args.frames)
    except ValueError as e:
        p.error(str(e))
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: this torch has no CUDA device")
    args.torch_device = torch.device(args.device)
    return args


def provenance(args, off) -> dict:
    """Fields common to every row: bench_train's names, plus the torch side's settings."""
    cuda = args.torch_device.type == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = args.tf32  # PyTorch's fp32 default: no TF32 matmul
    torch.backends.cudnn.allow_tf32 = args.tf32  # (cuDNN's default is on: set it too)
    torch.backends.cudnn.benchmark = False  # as run.py sets them
    torch.backends.cudnn.deterministic = True
    return dict(
        date=datetime.date.today().isoformat(),
        commit=measure.git_commit(),
        official_commit=off.commit,
        framework="torch",
        torch_version=torch.__version__,
        backend=args.torch_device.type,
        device=torch.cuda.get_device_name(args.torch_device) if cuda else measure.cpu_model(),
        device_count=1,
        allow_tf32=torch.backends.cuda.matmul.allow_tf32,
        cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
        cudnn_benchmark=torch.backends.cudnn.benchmark,
        cudnn_deterministic=torch.backends.cudnn.deterministic,
        threads=torch.get_num_threads(),
    )


def dynamo_counts() -> dict:
    """What torch.compile made of the model so far (counts since the last reset).

    compiled_frames: Python frames compiled (recompiles after a failed guard count again);
    compiled_graphs: graphs they produced; compile_fallbacks: frames dynamo gave up on and
    runs eagerly (the official Stage II `forward` is one: its per-frame bone-mask loop depends
    on the mask's values, so only the modules it calls are compiled).
    """
    counters = torch._dynamo.utils.counters
    frames = counters["frames"]
    return dict(
        compiled_frames=frames["ok"],
        compiled_graphs=counters["stats"]["unique_graphs"],
        compile_fallbacks=frames["total"] - frames["ok"],
    )


def bench_one(off, opt, args, common: dict, impl: str, dtype: str, batch: int) -> None:
    """Prints one JSON line per mode for (impl, dtype, batch); a failure prints an error line."""
    head = dict(impl=IMPLS[impl], stage="finetune", dtype=dtype, pipeline="synthetic",
                batch=batch, frames=opt.frames, layers=opt.layers, channel=opt.channel,
                d_hid=opt.d_hid)  # fmt: skip
    bench = None
    if impl == "compile":  # a fresh cache per figure: every figure compiles a new model
        torch._dynamo.reset()
    for mode in args.modes.split(","):
        try:
            bench = bench or Bench(off, opt, args, batch, dtype, impl)
            row = figures(mode, batch, time_steps(bench, mode, args.steps, args.warmup))
        except Exception as e:  # noqa: BLE001 - one figure failing must not end the run
            first_line = (str(e).splitlines() or [""])[0][:300]
            row = dict(mode=mode, error=f"{type(e).__name__}: {first_line}".rstrip(": "))
        if impl == "compile":
            row.update(dynamo_counts())
        load = round(os.getloadavg()[0], 2)
        print(json.dumps({**common, **head, **row, "load1": load}), flush=True)
    del bench
    if args.torch_device.type == "cuda":
        torch.cuda.empty_cache()


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        off = load_official(args.official)
    except OfficialCodeError as e:
        sys.exit(f"bench_reference: error: {e}")
    opt = official_options(args.frames, args.layers, args.channel, args.d_hid)
    common = provenance(args, off)
    for impl in args.impls.split(","):
        for dtype in args.dtypes.split(","):
            for batch in _ints(args.batches):
                bench_one(off, opt, args, common, impl, dtype, batch)


if __name__ == "__main__":
    main()
