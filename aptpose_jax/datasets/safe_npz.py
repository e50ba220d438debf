"""Reading and writing npz files whose entries may be pickled Python containers.

The official data files (VideoPose3D / P-STMO layout, §1.1, §1.11) store each entry as a 0-d
object array holding a pickled dict. `np.load(allow_pickle=True)` would execute whatever a
crafted file asks for, so object entries are read here with a restricted unpickler that admits
only plain containers (dict, list, tuple, str, int, float, bool, None), numpy arrays, dtypes and
numpy scalars. Anything else raises `UnsafePickleError` naming the file, the key and the global.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from aptpose_jax.errors import DataError, MissingFileError, UserError

# The numpy reconstruct helpers, taken from live objects so the same code works on numpy 1.x
# (`numpy.core.multiarray`) and 2.x (`numpy._core.multiarray`) without importing deprecated
# module paths.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_SCALAR = np.float32(0).__reduce__()[0]

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "str"): str,
    ("builtins", "int"): int,
    ("builtins", "float"): float,
    ("builtins", "bool"): bool,
    # Python 2 era pickles spell builtins `__builtin__`.
    ("__builtin__", "dict"): dict,
    ("__builtin__", "list"): list,
    ("__builtin__", "tuple"): tuple,
    ("__builtin__", "str"): str,
    ("__builtin__", "int"): int,
    ("__builtin__", "float"): float,
    ("__builtin__", "bool"): bool,
    ("collections", "OrderedDict"): collections.OrderedDict,  # a dict; no code runs
    # Protocol-2 pickles encode bytes (numpy's raw array data) through _codecs.encode.
    ("_codecs", "encode"): __import__("_codecs").encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
}


class UnsafePickleError(UserError, pickle.UnpicklingError):
    """A pickled entry referenced a global outside the allow-list."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose `find_class` only resolves the allow-listed globals."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            # numpy 2 pickles dtypes of some arrays through numpy.dtypes.<Name>DType classes.
            if module == "numpy.dtypes" and name.endswith("DType"):
                return getattr(np.dtypes, name)
            raise UnsafePickleError(f"{module}.{name}")
        return allowed


def _read_header(fp) -> np.dtype:
    """Reads the .npy magic + header from `fp`; returns the dtype (stream left at the data)."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        _, _, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        _, _, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise DataError(f"unsupported .npy format version {version}")
    return dtype


def _read_member(zf: zipfile.ZipFile, member: str, path: Path, key: str) -> np.ndarray:
    with zf.open(member) as fp:
        buf = io.BytesIO(fp.read())
    dtype = _read_header(buf)
    if not dtype.hasobject:
        # Plain arrays: numpy parses header + data itself, pickles disabled.
        buf.seek(0)
        return np.lib.format.read_array(buf, allow_pickle=False)
    try:
        value = _RestrictedUnpickler(buf, encoding="latin1").load()
    except UnsafePickleError as err:
        raise UnsafePickleError(
            f"{path}: entry {key!r} references the forbidden global {err}; only dict/list/"
            "tuple/str/int/float/bool/None and numpy arrays are accepted. The file is not a "
            "genuine data file (or was written by unknown code): do not load it."
        ) from None
    except Exception as err:
        raise DataError(f"{path}: entry {key!r} could not be unpickled: {err}") from err
    if not isinstance(value, np.ndarray):
        raise DataError(f"{path}: entry {key!r} did not unpickle to an array")
    return value


def load_npz(path: str | os.PathLike, unwrap: bool = True) -> dict[str, Any]:
    """Loads every entry of an npz file safely.

    Args:
      path: the `.npz` file.
      unwrap: return the Python object held by 0-d object arrays (what the official files'
        `.item()` gives, e.g. the `positions_3d` dict) instead of the array.

    Returns:
      dict entry name -> numpy array (or unwrapped object).

    Raises:
      FileNotFoundError: no such file.
      UnsafePickleError: a pickled entry referenced a forbidden global.
      ValueError: the file is not a valid npz.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: file not found")
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise DataError(f"{path}: not an npz (zip) file: {err}") from err
    out: dict[str, Any] = {}
    with zf:
        for member in zf.namelist():
            key = member[:-4] if member.endswith(".npy") else member
            arr = _read_member(zf, member, path, key)
            if unwrap and arr.dtype.hasobject and arr.ndim == 0:
                out[key] = arr.item()
            else:
                out[key] = arr
    return out


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, dict | list | tuple | str):
        # Containers become 0-d object arrays, exactly as the official files store them.
        holder = np.empty((), dtype=object)
        holder[()] = value
        return holder
    return np.asarray(value)


def save_npz_atomic(path: str | os.PathLike, compressed: bool = False, **arrays: Any) -> Path:
    """Writes an npz atomically (temp file in the same folder, then `os.replace`).

    dicts/lists/tuples/strings are stored as 0-d object arrays (pickled), as in the official
    VideoPose3D files, so `load_npz` (and `np.load(..., allow_pickle=True)[k].item()`) return
    them unchanged.

    Args:
      path: destination; the name is used as given (no `.npz` is appended).
      compressed: use `np.savez_compressed`.
      **arrays: entry name -> array or container.

    Returns:
      The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {k: _as_array(v) for k, v in arrays.items()}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            (np.savez_compressed if compressed else np.savez)(fh, **payload)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
