"""CLI: convert an official APTPose `.pth` state_dict into an orbax model directory.

  python -m aptpose_jax.convert --pth FILE.pth --out DIR [--refine_pth R.pth]
      [--temporal-ratio 0.8] [--debug]

DIR receives `state/` (orbax checkpoint of parameters + BatchNorm statistics) and
`model_config.json`; it must not exist and is written atomically. A Stage I file records
the fraction of masked frames it will be called with: `--temporal-ratio`, or, when not given,
the H36M pre-training value 0.8 (`-tmr 0.8`), which the tool says it used. User errors (missing
or truncated file, not a state_dict, mismatched keys, existing output) are one line on stderr
and exit status 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from aptpose_jax.convert.pth import convert_pth, infer_config, read_state_dict
from aptpose_jax.errors import EXIT_USER_ERROR, UserError, one_line

# Stage I is pre-trained with -tmr 0.8 on Human3.6M (configs/h36m_pretrain.py); 3DHP and the
# in-the-wild model use 0.7.
DEFAULT_STAGE1_TEMPORAL_RATIO = 0.8


def _convert(args) -> dict:
    ratio, ratio_from = args.temporal_ratio, "--temporal-ratio"
    stage = infer_config(read_state_dict(args.pth)).stage
    if stage != "pretrain":
        ratio, ratio_from = 0.0, "not used (Stage II)"
    elif ratio is None:
        ratio, ratio_from = DEFAULT_STAGE1_TEMPORAL_RATIO, "default (H36M -tmr 0.8)"
        print(
            f"note: {args.pth} is a Stage I model and --temporal-ratio was not given: recorded "
            f"temporal_ratio {ratio} (H36M pre-training); pass --temporal-ratio 0.7 for the "
            "3DHP or in-the-wild Stage I files",
            file=sys.stderr,
        )
    cfg = convert_pth(args.pth, args.out, refine_pth=args.refine_pth, temporal_ratio=ratio)
    return {"out": args.out, "config": cfg.__dict__, "temporal_ratio_from": ratio_from}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m aptpose_jax.convert", description=__doc__)
    p.add_argument("--pth", required=True, help="state_dict of Stage I, Stage II or no-mask model")
    p.add_argument("--out", required=True, help="output directory (must not exist)")
    p.add_argument("--refine_pth", default=None, help="optional refine module state_dict (§2.8)")
    p.add_argument(
        "--temporal-ratio",
        "--temporal_ratio",
        dest="temporal_ratio",
        type=float,
        default=None,
        help="Stage I only: fraction of masked frames the model will be called with "
        f"(default {DEFAULT_STAGE1_TEMPORAL_RATIO}, the H36M pre-training value)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    args = p.parse_args(argv)
    try:
        result = _convert(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
