"""Stage I (HMPM pre-training) on Human3.6M with CPN keypoints.

Run book:
  python -m aptpose_jax.main --config=configs/h36m_pretrain.py --workdir=workdirs/h36m_pretrain
  (reference: run.py -f 243 -b 160 --MAE --train 1 --layers 4 -tds 2 -tmr 0.8 -smn 2
   --lr 0.0001 -lrd 0.97; 79 epochs)
Demo (synthetic data, a few minutes on 2 CPU cores):
  python -m aptpose_jax.main --config=configs/h36m_pretrain.py:demo --workdir=workdirs/demo/pretrain
Expected: the printed metric is the 2D reconstruction error x1000 (normalised units), which
falls steadily; APTPose does not report a Stage I number. The demo (9 frames, 400 steps at lr
1e-3, `defaults.apply_h36m_demo`) ends near 70 (about 85 CPU-seconds).
"""

from aptpose_jax.defaults import apply_h36m_demo, base_config, parse_arg


def get_config(arg=None):
    words = parse_arg(arg, ("demo",))
    c = base_config()
    c.model.stage = "pretrain"
    c.model.frames = 243
    c.model.layers = 4
    c.data.tds = 2
    c.masks.temporal_ratio = 0.8
    c.masks.joints_per_frame = 2
    c.optim.batch_size = 160
    c.optim.lr = 1e-4
    c.optim.lr_decay = 0.97
    if "demo" in words:
        apply_h36m_demo(c)
    return c
