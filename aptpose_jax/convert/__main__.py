"""CLI: convert an official APTPose `.pth` state_dict into an orbax model directory.

  python -m aptpose_jax.convert --pth FILE.pth --out DIR [--refine_pth R.pth]
      [--temporal_ratio 0.8]

DIR receives `state/` (orbax checkpoint of parameters + BatchNorm statistics) and
`model_config.json`; it must not exist and is written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys

from aptpose_jax.convert.pth import convert_pth


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m aptpose_jax.convert", description=__doc__)
    p.add_argument("--pth", required=True, help="state_dict of Stage I, Stage II or no-mask model")
    p.add_argument("--out", required=True, help="output directory (must not exist)")
    p.add_argument("--refine_pth", default=None, help="optional refine module state_dict (§2.8)")
    p.add_argument(
        "--temporal_ratio",
        type=float,
        default=0.0,
        help="Stage I only: fraction of masked frames the model will be called with",
    )
    args = p.parse_args(argv)
    try:
        cfg = convert_pth(
            args.pth, args.out, refine_pth=args.refine_pth, temporal_ratio=args.temporal_ratio
        )
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"out": args.out, "config": cfg.__dict__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
