"""Stage II (STMO lifter) fine-tuning on Human3.6M with CPN keypoints, from Stage I weights.

Run book:
  python -m aptpose_jax.main --config=configs/h36m_finetune.py --workdir=workdirs/h36m_finetune \
      --config.init.from_workdir=workdirs/h36m_pretrain
  (or --config.init.from_pth=pretrain_XX_YYYY.pth for an official Stage I file)
  (reference: run.py -f 243 -b 160 --train 1 --layers 4 -tds 2 --lr 0.0007 -lrd 0.97
   --MAE_reload 1 --previous_dir <stage I .pth>; smn 0, tmr 0; 79 epochs)
Demo:
  python -m aptpose_jax.main --config=configs/h36m_finetune.py:demo --workdir=workdirs/demo/finetune
Expected: P1 around 42-43 mm (CPN, the released APTPose checkpoint encodes 42.60 mm with
8 layers); the demo run (9 frames, 2000 steps at lr 1.5e-3, `defaults.apply_h36m_demo`; about
300 CPU-seconds) ends with a per-action table on synthetic data: P1 about 69 mm, P2 about 49 mm
(Walking, the hardest class, about 92 mm).
"""

from aptpose_jax.defaults import apply_h36m_demo, base_config, parse_arg, sibling_workdir


def get_config(arg=None):
    words = parse_arg(arg, ("demo", "gt"))
    c = base_config()
    c.model.stage = "lifter"
    c.model.frames = 243
    c.model.layers = 4
    c.data.tds = 2
    if "gt" in words:
        c.data.keypoints = "gt"
    c.masks.joints_per_frame = 0
    c.optim.batch_size = 160
    c.optim.lr = 7e-4
    c.optim.lr_decay = 0.97
    if "demo" in words:
        apply_h36m_demo(c)
        c.init.from_workdir = sibling_workdir("pretrain")
    return c
