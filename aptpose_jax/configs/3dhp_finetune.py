"""Stage II fine-tuning on MPI-INF-3DHP with the mask-free lifter (§2.7), from Stage I.

Run book:
  python -m aptpose_jax.main --config=configs/3dhp_finetune.py --workdir=workdirs/3dhp_finetune \
      --config.init.from_workdir=workdirs/3dhp_pretrain
  (reference: run_3dhp.py -f 81 -b 160 --train 1 --layers 3 --lr 0.0007 -lrd 0.97
   --MAE_reload 1 --previous_dir <stage I .pth>)
Writes PCK@150 / AUC / MPJPE per sequence, scene group and overall (CSV + JSON) at every
evaluation. Expected (P-STMO-S, spreadsheet in the official repo): PCK 97.9, AUC 75.8,
MPJPE 32.2 mm (frame-weighted).
Demo:
  python -m aptpose_jax.main --config=configs/3dhp_finetune.py:demo \
      --workdir=workdirs/demo/3dhp_finetune
"""

from aptpose_jax.defaults import apply_demo, base_config, parse_arg, sibling_workdir


def get_config(arg=None):
    words = parse_arg(arg, ("demo",))
    c = base_config()
    c.model.stage = "lifter_nomask"
    c.model.frames = 81
    c.model.layers = 3
    c.data.dataset = "mpi_inf_3dhp"
    c.data.root = "data/3dhp"
    c.data.keypoints = "gt"
    c.data.tds = 1
    c.optim.batch_size = 160
    c.optim.lr = 7e-4
    c.optim.lr_decay = 0.97
    if "demo" in words:
        apply_demo(c)
        c.init.from_workdir = sibling_workdir("3dhp_pretrain")
    return c
