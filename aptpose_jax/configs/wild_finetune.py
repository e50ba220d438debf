"""Stage II for in-the-wild use: mask-free lifter (§2.7) on Detectron COCO keypoints.

Run book:
  python -m aptpose_jax.main --config=configs/wild_finetune.py --workdir=workdirs/wild_finetune \
      --config.init.from_workdir=workdirs/wild_pretrain
  (reference: run_in_the_wild.py -k detectron_pt_coco -f 243 -b 160 --train 1 --layers 4
   -tds 2 --lr 0.001 -lrd 0.97 --MAE_reload 1 --previous_dir <MAE_*.pth>)
Expected: P-STMO-S in the wild reports 51.37 mm P1.
Demo:
  python -m aptpose_jax.main --config=configs/wild_finetune.py:demo \
      --workdir=workdirs/demo/wild_finetune
"""

from aptpose_jax.defaults import apply_demo, base_config, parse_arg, sibling_workdir


def get_config(arg=None):
    words = parse_arg(arg, ("demo",))
    c = base_config()
    c.model.stage = "lifter_nomask"
    c.model.frames = 243
    c.model.layers = 4
    c.data.keypoints = "detectron_pt_coco"
    c.data.tds = 2
    c.optim.batch_size = 160
    c.optim.lr = 1e-3
    c.optim.lr_decay = 0.97
    if "demo" in words:
        apply_demo(c)
        c.init.from_workdir = sibling_workdir("wild_pretrain")
    return c
