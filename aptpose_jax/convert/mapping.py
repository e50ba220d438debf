"""PyTorch state_dict key <-> NNX state path mapping, by rule (reference §5). Pure numpy.

NNX paths are tuples such as `("encoder1", "layers", 0, "w1", "kernel")`; the model's attribute
names mirror the PyTorch tree, so a torch key is the dotted path with leaf names renamed
(`kernel`/`scale` -> `weight`, `mean` -> `running_mean`, `var` -> `running_var`). Two explicit
exceptions: the refine module (`refine.post_refine.{0,1}` <-> `post_refine.{0,3}`, §5.3) and the
layouts of kernels (Linear `(out, in)`, Conv1d `(out, in, k)` <-> ours `(in, out)` or
`(k, in, out)`).

The unused final norms (Q6) and unused embedding rows (Q10) are real parameters of our models,
so they round-trip. The only torch entries deliberately not loaded are listed in
`SKIPPED_KEYS` (`num_batches_tracked`: no effect with momentum set, §5).
"""

from __future__ import annotations

import re

import numpy as np

from aptpose_jax.errors import WeightsError

Path = tuple  # NNX state path: str attribute names and int list indices

_LEAF_TO_TORCH = {
    "kernel": "weight",
    "scale": "weight",
    "mean": "running_mean",
    "var": "running_var",
}
_REFINE_INDEX = {0: 0, 1: 3}  # our list index -> torch Sequential index (§5.3)

# Torch entries that are read but deliberately not loaded, with the reason (reported by loaders).
SKIPPED_KEYS = {
    r"(^|\.)num_batches_tracked$": "BatchNorm step counter; no effect with momentum 0.1 (§5)",
}

# Kernels stored as Conv1d (out, in, k) in torch; every other kernel is a Linear (out, in).
_CONV_KERNEL = re.compile(
    r"^(encoder\d+\..*|fcn(_1|_vec|_vec1|_dec)?\.1|Transformer_reduce\..*\.feed_forward\.w_[12])"
    r"\.weight$"
)


def is_skipped(key: str) -> bool:
    """True for torch keys listed in `SKIPPED_KEYS`."""
    return any(re.search(p, key) for p in SKIPPED_KEYS)


def torch_key(path: Path) -> str:
    """NNX state path -> PyTorch state_dict key."""
    parts = list(path)
    if parts[:2] == ["refine", "post_refine"]:  # §5.3: `post_refine.0` / `post_refine.3`
        parts = ["post_refine", _REFINE_INDEX[parts[2]], *parts[3:]]
    parts[-1] = _LEAF_TO_TORCH.get(parts[-1], parts[-1])
    return ".".join(str(p) for p in parts)


def to_torch_layout(key: str, value: np.ndarray) -> np.ndarray:
    """Our array -> the torch tensor layout for `key` (kernels transposed)."""
    value = np.asarray(value)
    if not key.endswith(".weight") or value.ndim < 2:
        return value
    if value.ndim == 3:  # strided conv kernel (k, in, out) -> (out, in, k)
        return np.ascontiguousarray(value.transpose(2, 1, 0))
    w = np.ascontiguousarray(value.T)  # (in, out) -> (out, in)
    return w[:, :, None] if _CONV_KERNEL.match(key) else w  # Conv1d k=1: (out, in, 1)


def from_torch_layout(key: str, tensor: np.ndarray, ours_ndim: int) -> np.ndarray:
    """Torch tensor -> our layout; `ours_ndim` is the rank of our parameter (2 or 3 for kernels).

    Raises:
      ValueError: when a kernel has a rank the rule does not expect.
    """
    t = np.asarray(tensor)
    if not key.endswith(".weight") or ours_ndim < 2:
        return t
    if ours_ndim == 3 and t.ndim == 3:  # Conv1d (out, in, k) -> (k, in, out)
        return np.ascontiguousarray(t.transpose(2, 1, 0))
    if ours_ndim == 2 and t.ndim == 3 and t.shape[2] == 1 and _CONV_KERNEL.match(key):
        return np.ascontiguousarray(t[:, :, 0].T)  # Conv1d k=1 (out, in, 1) -> (in, out)
    if ours_ndim == 2 and t.ndim == 2 and not _CONV_KERNEL.match(key):
        return np.ascontiguousarray(t.T)  # Linear (out, in) -> (in, out)
    raise WeightsError(f"{key}: tensor of shape {t.shape} does not fit a rank-{ours_ndim} kernel")


def state_dict_to_flat(
    state_dict: dict[str, np.ndarray], template: dict[Path, tuple]
) -> tuple[dict[Path, np.ndarray], list[str]]:
    """Maps a torch state_dict onto the NNX paths of `template` (path -> our shape).

    Args:
      state_dict: torch key -> array (a leading `module.` already stripped).
      template: every NNX path to fill, with the shape our model expects there.

    Returns:
      (path -> array in our layout, sorted list of skipped torch keys).

    Raises:
      ValueError: ONE error listing every missing, unexpected and mis-shaped key.
    """
    by_key = {torch_key(p): p for p in template}
    missing = sorted(k for k in by_key if k not in state_dict)
    skipped = sorted(k for k in state_dict if k not in by_key and is_skipped(k))
    unexpected = sorted(k for k in state_dict if k not in by_key and not is_skipped(k))
    flat, misshaped = {}, []
    for key, path in by_key.items():
        if key not in state_dict:
            continue
        shape = tuple(template[path])
        try:
            value = from_torch_layout(key, state_dict[key], len(shape))
        except WeightsError as e:
            misshaped.append(str(e))
            continue
        if value.shape != shape:
            want = to_torch_layout(key, np.zeros(shape, np.float32)).shape
            misshaped.append(f"{key}: got {tuple(np.shape(state_dict[key]))}, expected {want}")
            continue
        flat[path] = value.astype(np.float32)
    problems = [
        (f"missing keys ({len(missing)})", missing),
        (f"unexpected keys ({len(unexpected)})", unexpected),
        (f"mis-shaped keys ({len(misshaped)})", misshaped),
    ]
    if missing or unexpected or misshaped:
        lines = [f"  {title}:\n    " + "\n    ".join(items) for title, items in problems if items]
        raise WeightsError(
            "state_dict does not match the model (check stage/frames/layers/channel/d_hid):\n"
            + "\n".join(lines)
        )
    return flat, skipped


def flat_to_state_dict(flat: dict[Path, np.ndarray]) -> dict[str, np.ndarray]:
    """NNX path -> array (ours) to a torch-layout state_dict (without `num_batches_tracked`)."""
    return {torch_key(p): to_torch_layout(torch_key(p), np.asarray(v)) for p, v in flat.items()}
