"""Evaluation on MPI-INF-3DHP: PCK@150mm, AUC and MPJPE without MATLAB.

Run book:
  python -m aptpose_jax.main --config=configs/3dhp_eval.py --workdir=workdirs/3dhp_eval \
      --config.init.from_pth=checkpoint/Best_Result/3dhp_66_3081.pth   # P1 30.81 mm
  (the README evaluation omits --layers, i.e. 4, while training used 3 (Q25); with a .pth
   file the layer count is read from the file, so this does not matter here)
Outputs `mpi3dhp_metrics.csv` and `mpi3dhp_metrics.json` in the workdir.
Demo:
  python -m aptpose_jax.main --config=configs/3dhp_eval.py:demo --workdir=workdirs/demo/3dhp_eval
"""

from aptpose_jax.defaults import apply_demo, base_config, parse_arg, sibling_workdir


def get_config(arg=None):
    words = parse_arg(arg, ("demo",))
    c = base_config()
    c.mode = "eval"
    c.model.stage = "lifter_nomask"
    c.model.frames = 81
    c.model.layers = 3
    c.data.dataset = "mpi_inf_3dhp"
    c.data.root = "data/3dhp"
    c.data.keypoints = "gt"
    c.data.tds = 1
    if "demo" in words:
        apply_demo(c)
        c.init.from_workdir = sibling_workdir("3dhp_finetune")
    return c
