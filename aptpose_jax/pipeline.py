"""Input pipeline: device placement of the data, index batches, prefetch (one or many hosts).

Two ways to feed a step, chosen by `data.pipeline`:

* "device" (the default): the run's sequences are placed ONCE on every device of the mesh
  (`DeviceWindows`: concatenated 2D keypoints, the 3D poses only when the stage needs them —
  never Stage I —, the camera vectors and the pair tables), replicated. A step then receives
  only an `IndexBatch`: the data (already on the devices) and the batch's pair indices (B,)
  int32, sharded over `data`. The window gather (tds stride, border clamping) and the
  training flip (x negation, left/right swap of 2D and 3D, camera entries 2 and 7) run inside
  the jitted step (`materialize`), bitwise equal to `WindowDataset.get_batch`.
* "host": for data that must not sit on the device. `WindowDataset.get_batch` gathers each
  batch in a background thread that keeps `data.prefetch` (>= 2) batches placed ahead, so the
  step never waits on a Python gather.

Multi-process: every process computes the same global index batch (the epoch order is a pure
function of seed and epoch) and materialises only the rows of its own devices
(`shard_rows`): the global batch is `optim.batch_size` whatever the process count.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from aptpose_jax import sharding
from aptpose_jax.datasets.windows import WindowDataset
from aptpose_jax.flip import flip_camera, flip_pose

PIPELINES = ("device", "host")


@flax.struct.dataclass
class DeviceWindows:
    """A `WindowDataset`'s arrays on the devices; `gather` builds batches inside a jit.

    Array fields (replicated): poses_2d (N, J, 2), poses_3d (N, J, 3) or None, cameras (S, 9),
    lengths (S,), seq_offsets (S,), pair_seq / pair_start / pair_flip (P,). The static fields
    (part of the jit cache key) say how windows are cut and mirrored.
    """

    poses_2d: jax.Array
    poses_3d: jax.Array | None
    cameras: jax.Array
    lengths: jax.Array
    seq_offsets: jax.Array
    pair_seq: jax.Array
    pair_start: jax.Array
    pair_flip: jax.Array
    frames: int = flax.struct.field(pytree_node=False)
    tds: int = flax.struct.field(pytree_node=False)
    train: bool = flax.struct.field(pytree_node=False)
    lr_2d: tuple = flax.struct.field(pytree_node=False)
    lr_3d: tuple = flax.struct.field(pytree_node=False)

    def gather(self, idx: jax.Array) -> dict[str, jax.Array]:
        """The batch of pair indices `idx` (B,): the keys of `WindowDataset.get_batch` that
        the steps use ("input_2d", "gt_3d" when 3D is placed, "cam"), bitwise equal to it."""
        pad = (self.frames - 1) // 2
        offsets = jnp.asarray((np.arange(self.frames) - pad) * self.tds, jnp.int32)  # (F,)
        seq = self.pair_seq[idx]  # (B,)
        start = self.pair_start[idx]  # (B,)
        last = self.lengths[seq] - 1  # (B,)
        local = jnp.clip(start[:, None] + offsets[None, :], 0, last[:, None])  # (B, F)
        frame = local + self.seq_offsets[seq][:, None]  # (B, F) rows of the concatenation
        flip = self.pair_flip[idx] if self.train else None  # (B,)

        def mirrored(x, lr):  # flips the rows of flipped pairs (training only)
            if flip is None:
                return x
            return jnp.where(flip.reshape((-1,) + (1,) * (x.ndim - 1)), flip_pose(x, *lr), x)

        x2 = mirrored(self.poses_2d[frame], self.lr_2d)  # (B, F, J, 2)
        batch = {"input_2d": x2}
        if self.poses_3d is not None:
            if self.train:
                rows = frame  # (B, F)
            else:  # the centre frame only
                rows = (jnp.clip(start, 0, last) + self.seq_offsets[seq])[:, None]  # (B, 1)
            batch["gt_3d"] = mirrored(self.poses_3d[rows], self.lr_3d)  # (B, F|1, J, 3)
        cam = self.cameras[seq]  # (B, 9)
        batch["cam"] = cam if flip is None else jnp.where(flip[:, None], flip_camera(cam), cam)
        return batch


@flax.struct.dataclass
class IndexBatch:
    """What a step receives on the device pipeline: the placed data and (B,) pair indices."""

    windows: DeviceWindows
    idx: jax.Array


def materialize(batch) -> dict[str, jax.Array]:
    """Inside a step: the batch dict, gathered on the device from an `IndexBatch`, or the host
    batch dict itself."""
    if isinstance(batch, IndexBatch):
        return batch.windows.gather(batch.idx)
    return batch


def put_global(x: np.ndarray, mesh) -> jax.Array:
    """Places a host array, identical in every process, replicated over the whole mesh."""
    rep = sharding.replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(x, rep)
    return jax.make_array_from_callback(x.shape, rep, lambda index: x[index])


def device_arrays(ds: WindowDataset, with_3d: bool) -> dict[str, np.ndarray]:
    """The host arrays `place_windows` puts on the devices (int32 tables, float32 poses)."""
    arrays = {
        "poses_2d": ds.poses_2d,
        "poses_3d": ds.poses_3d if with_3d else None,
        "cameras": ds.cameras,
        "lengths": ds.lengths.astype(np.int32),
        "seq_offsets": ds.seq_offsets.astype(np.int32),
        "pair_seq": ds.pair_seq.astype(np.int32),
        "pair_start": ds.pair_start.astype(np.int32),
        "pair_flip": ds.pair_flip,
    }
    if with_3d and ds.poses_3d is None:
        raise ValueError("this stage needs 3D poses, but the dataset has none")
    if ds.poses_2d.shape[0] >= 2**31 or len(ds) >= 2**31:
        raise ValueError("more than 2^31 frames or pairs: the device tables are int32")
    return arrays


def device_bytes(ds: WindowDataset, with_3d: bool) -> int:
    """Bytes each device holds for `ds` on the device pipeline."""
    return sum(a.nbytes for a in device_arrays(ds, with_3d).values() if a is not None)


def place_windows(ds: WindowDataset, mesh, *, with_3d: bool) -> DeviceWindows:
    """Places `ds` on every device of `mesh` (replicated); see `DeviceWindows`."""
    arrays = {
        k: None if a is None else put_global(a, mesh) for k, a in device_arrays(ds, with_3d).items()
    }
    return DeviceWindows(
        **arrays,
        frames=ds.frames,
        tds=ds.tds,
        train=ds.train,
        lr_2d=ds.lr_2d,
        lr_3d=ds.lr_3d,
    )


def shard_rows(rows: Callable[[np.ndarray], dict], idx: np.ndarray, mesh) -> dict[str, jax.Array]:
    """Global arrays of the batch `idx` (B,), split over `data`; each process builds only its
    own devices' rows.

    Args:
      rows: maps a slice of `idx` to a dict of host arrays with that many leading rows.
      idx: the global batch's pair indices, identical in every process.
      mesh: the data-parallel mesh.
    """
    sharded = sharding.batch_sharded(mesh)
    b = len(idx)
    per_device = sharded.addressable_devices_indices_map((b,))
    parts, names = [], None
    for device, index in per_device.items():
        part = rows(idx[index[0]])
        names = names or list(part)
        parts.append((device, part))
    out = {}
    for name in names:
        tail = parts[0][1][name].shape[1:]
        arrays = [jax.device_put(p[name], d) for d, p in parts]
        out[name] = jax.make_array_from_single_device_arrays((b, *tail), sharded, arrays)
    return out


class Prefetcher:
    """Iterates `make(i)` for i in `range(start, stop)` from a background thread that keeps up
    to `depth` items ready; exceptions re-raise in the consumer. Use as a context manager (or
    call `close`) so the thread ends when the consumer stops early."""

    def __init__(self, make: Callable[[int], object], start: int, stop: int, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(make, start, stop), daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, make, start, stop):
        try:
            for i in range(start, stop):
                if not self._put(("item", make(i))):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._put(("error", e))
            return
        self._put(("done", None))

    def __iter__(self) -> Iterator:
        while True:
            kind, item = self._queue.get()
            if kind == "done":
                return
            if kind == "error":
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Pipeline:
    """Feeds one split's batches to the steps (see the module docstring).

    Args:
      ds: the split's windows.
      mesh: the data-parallel mesh.
      mode: "device" or "host".
      keys: the batch keys the steps read on the host path ("input_2d", "gt_3d", ...).
      with_3d: place the 3D poses on the device path.
      prefetch: batches the host path keeps ready (>= 2).
    """

    def __init__(self, ds: WindowDataset, mesh, *, mode: str, keys: tuple, with_3d: bool,
                 prefetch: int = 2):  # fmt: skip
        if mode not in PIPELINES:
            raise ValueError(f"data.pipeline must be one of {PIPELINES}, got {mode!r}")
        self.ds, self.mesh, self.mode, self.keys = ds, mesh, mode, tuple(keys)
        self.prefetch = max(int(prefetch), 2)
        self.windows = place_windows(ds, mesh, with_3d=with_3d) if mode == "device" else None

    def _host_rows(self, idx: np.ndarray) -> dict:
        batch = self.ds.get_batch(idx)
        return {k: batch[k] for k in self.keys if k in batch}

    def batch(self, idx: np.ndarray):
        """The step input of the global batch `idx` (B,) (identical in every process)."""
        idx = np.asarray(idx, np.int32)
        if self.mode == "device":
            rows = shard_rows(lambda part: {"idx": part}, idx, self.mesh)["idx"]
            return IndexBatch(windows=self.windows, idx=rows)
        return shard_rows(self._host_rows, idx, self.mesh)

    def batches(self, index_of: Callable[[int], np.ndarray], start: int, stop: int) -> Iterator:
        """Step inputs of batches start..stop-1, `index_of(i)` giving batch i's indices.

        The host path gathers them in a `Prefetcher` thread (ended when the generator is
        closed or collected); the device path builds the small index arrays on the fly (steps
        are dispatched asynchronously, so this overlaps the previous step anyway).
        """
        make = lambda i: self.batch(index_of(i))  # noqa: E731
        if self.mode == "device":
            yield from (make(i) for i in range(start, stop))
            return
        with Prefetcher(make, start, stop, self.prefetch) as feed:
            yield from feed
