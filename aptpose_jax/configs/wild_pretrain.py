"""Stage I pre-training for in-the-wild use: Human3.6M with Detectron COCO keypoints.

Run book:
  python -m aptpose_jax.main --config=configs/wild_pretrain.py --workdir=workdirs/wild_pretrain
  (reference: run_in_the_wild.py -k detectron_pt_coco -f 243 -b 160 --MAE --train 1
   --layers 4 -tds 2 -tmr 0.7 -smn 2 --lr 0.0001 -lrd 0.97)
Masks use H36M joint indices on the COCO-ordered input, as the reference does (Q23).
Demo:
  python -m aptpose_jax.main --config=configs/wild_pretrain.py:demo \
      --workdir=workdirs/demo/wild_pretrain
"""

from aptpose_jax.defaults import apply_demo, base_config, parse_arg


def get_config(arg=None):
    words = parse_arg(arg, ("demo",))
    c = base_config()
    c.model.stage = "pretrain"
    c.model.frames = 243
    c.model.layers = 4
    c.data.keypoints = "detectron_pt_coco"
    c.data.tds = 2
    c.masks.temporal_ratio = 0.7
    c.masks.joints_per_frame = 2
    c.optim.batch_size = 160
    c.optim.lr = 1e-4
    c.optim.lr_decay = 0.97
    if "demo" in words:
        apply_demo(c)
    return c
