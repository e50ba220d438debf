"""The run books: one configuration file per command (`get_config(arg)` -> ConfigDict).

They ship inside the package so that an installed `aptpose` finds them by name from any
directory (`--config=h36m_eval:demo`); the checkout's top-level `configs/` is a link to this
folder, so `--config=configs/h36m_eval.py:demo` keeps working there. The files are loaded by
path (`aptpose_jax.config_files`), not imported: their names start with digits.
"""
