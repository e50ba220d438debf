"""Evaluation of a Stage II model on Human3.6M (P1, P2 per action, flip TTA).

Run book (released checkpoints use 8 layers, Q25; a .pth file's sizes are inferred from it):
  python -m aptpose_jax.main --config=configs/h36m_eval.py:gt --workdir=workdirs/eval_gt \
      --config.init.from_pth=checkpoint/Best_Result/h36m_gt_13_2689.pth      # P1 26.89 mm
  python -m aptpose_jax.main --config=configs/h36m_eval.py --workdir=workdirs/eval_cpn \
      --config.init.from_pth=checkpoint/Best_Result/h36m_cpn_5_4260.pth      # P1 42.60 mm
  or --config.init.from_workdir=workdirs/h36m_finetune (its best checkpoint).
Masks are drawn in evaluation as the reference does (Q2); --config.masks.in_eval=False
evaluates without masks.
Demo:
  python -m aptpose_jax.main --config=configs/h36m_eval.py:demo --workdir=workdirs/demo/eval
  Expected: the fine-tuned demo model's table again, P1 about 69 mm, P2 about 49 mm.
"""

from aptpose_jax.defaults import apply_h36m_demo, base_config, parse_arg, sibling_workdir


def get_config(arg=None):
    words = parse_arg(arg, ("demo", "gt", "cpn"))
    c = base_config()
    c.mode = "eval"
    c.model.stage = "lifter"
    c.model.frames = 243
    c.model.layers = 8
    c.data.tds = 2
    c.data.keypoints = "gt" if "gt" in words else "cpn_ft_h36m_dbb"
    c.masks.joints_per_frame = 0
    if "demo" in words:
        apply_h36m_demo(c)
        c.init.from_workdir = sibling_workdir("finetune")
    return c
