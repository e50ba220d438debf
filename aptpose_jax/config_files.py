"""Finding a run configuration by file path or by name: `--config=h36m_eval:demo`.

The run books ship inside the package (`aptpose_jax/configs/`; the checkout's top-level
`configs/` links there). `--config=SPEC[:ARG]` names a file that exists (any path), or a
packaged config by name: `h36m_eval`, `h36m_eval.py`, or `configs/h36m_eval.py` when that
path does not exist where the command runs (an installed package, another directory). A
name that matches nothing is a `ConfigError` listing the packaged configs.
"""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path

import ml_collections

from aptpose_jax.errors import ConfigError, UserError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def names() -> list[str]:
    """The packaged configs, by name (`h36m_eval`, ...)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_"))


def resolve(spec: str) -> str:
    """`PATH_OR_NAME[:ARG]` -> `EXISTING_FILE[:ARG]` (see the module docstring)."""
    path, colon, arg = spec.partition(":")
    if Path(path).expanduser().is_file():
        return spec
    p = Path(path)
    name = p.name.removesuffix(".py")
    if p.parent in (Path("."), Path("configs")) and name in names():
        return f"{CONFIG_DIR / (name + '.py')}{colon}{arg}"
    close = difflib.get_close_matches(name, names(), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ConfigError(
        f"config file {path!r} not found; give a file path or a packaged config by name "
        f"(--config=NAME[:ARG], NAME one of {', '.join(names())}){hint}"
    )


def resolve_flag_args(argv: list[str]) -> list[str]:
    """The command line with `--config=SPEC` / `--config SPEC` resolved (overrides untouched)."""
    out = list(argv)
    for i, a in enumerate(out):
        for flag in ("--config=", "-config="):
            if a.startswith(flag):
                out[i] = flag + resolve(a[len(flag) :])
        if a in ("--config", "-config") and i + 1 < len(out):
            out[i + 1] = resolve(out[i + 1])
    return out


def user_error_of(argv: list[str]) -> UserError | None:
    """The `UserError` that loading the `--config` of `argv` raises, if any.

    ml_collections reports an error of `get_config` as text holding a traceback; loading the
    file again here gets the exception itself, for a one-line message.
    """
    specs = [a.split("=", 1)[1] for a in argv if a.startswith(("--config=", "-config="))]
    specs += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--config", "-config")]
    for spec in specs:
        try:
            load(spec)
        except UserError as e:
            return e
        except Exception:  # noqa: BLE001  (not a user error: absl's message stands)
            return None
    return None


def load(spec: str) -> ml_collections.ConfigDict:
    """`get_config(ARG)` of a config named as on the command line (`h36m_eval:demo`)."""
    path, _, arg = resolve(spec).partition(":")
    module_spec = importlib.util.spec_from_file_location(f"cfg_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)
