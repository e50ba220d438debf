"""Stage I pre-training on MPI-INF-3DHP (GT 2D, 81 frames, no temporal downsampling).

Run book:
  python -m aptpose_jax.main --config=configs/3dhp_pretrain.py --workdir=workdirs/3dhp_pretrain
  (reference: run_3dhp.py -f 81 -b 160 --MAE --train 1 --layers 3 -tmr 0.7 -smn 2
   --lr 0.0001 -lrd 0.97)
Demo:
  python -m aptpose_jax.main --config=configs/3dhp_pretrain.py:demo \
      --workdir=workdirs/demo/3dhp_pretrain
"""

from aptpose_jax.defaults import apply_demo, base_config, parse_arg


def get_config(arg=None):
    words = parse_arg(arg, ("demo",))
    c = base_config()
    c.model.stage = "pretrain"
    c.model.frames = 81
    c.model.layers = 3
    c.data.dataset = "mpi_inf_3dhp"
    c.data.root = "data/3dhp"
    c.data.keypoints = "gt"
    c.data.tds = 1
    c.masks.temporal_ratio = 0.7
    c.masks.joints_per_frame = 2
    c.optim.batch_size = 160
    c.optim.lr = 1e-4
    c.optim.lr_decay = 0.97
    if "demo" in words:
        apply_demo(c)
    return c
