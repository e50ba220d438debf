"""Resume safety: the settings a resumed run must share with the run that wrote its checkpoint.

`run_builder.Run.save` stores `resume_fields(run)` in every checkpoint's metadata; on restart
`check_resume` compares them with the new run's and refuses (one line listing each differing
field) when the data order or the step accounting would change, unless `--config.resume=force`.
`run` is a `run_builder.Run` (only its `config`, `model_cfg`, `train_ds` and `workdir` are read).
"""

from __future__ import annotations

import json

from absl import logging

from aptpose_jax.errors import ResumeMismatchError

# Fields that fix the data order and the step accounting of a training run (§4): a resumed
# run that disagrees would continue at a wrong position (see `check_resume`).
RESUME_FIELDS = (
    "seed",
    "model.stage",
    "optim.batch_size",
    "optim.max_steps_per_epoch",
    "data.dataset",
    "data.keypoints",
    "data.subjects_train",
    "data.actions",
    "data.downsample",
    "data.subset",
    "data.tds",
    "data.stride",
    "data.flip_augment",
    "data.drop_remainder",
)


def _field(config, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def resume_fields(run) -> dict:
    """The values a resumed run must share with the run that wrote the checkpoint."""
    fields = {name: _field(run.config, name) for name in RESUME_FIELDS}
    fields["model.frames"] = run.model_cfg.frames  # the model that runs (sizes from weights)
    fields["training windows"] = len(run.train_ds)
    return json.loads(json.dumps(fields))  # as stored in the checkpoint's JSON metadata


def check_resume(run, meta: dict) -> None:
    """Refuses to resume from a checkpoint written with another data order or step accounting.

    Raises:
      ResumeMismatchError: listing each differing field, unless `config.resume == "force"`.
    """
    saved = meta.get("resume")
    if saved is None:
        logging.warning("checkpoint step %s records no resume fields: not checked", meta["step"])
        return
    now = resume_fields(run)
    diff = [f"{k} {saved.get(k)!r} -> {v!r}" for k, v in now.items() if saved.get(k) != v]
    if not diff:
        return
    if run.config.resume == "force":
        logging.warning("resuming despite other settings (resume=force): %s", "; ".join(diff))
        return
    raise ResumeMismatchError(
        f"{run.workdir} holds a checkpoint (step {meta['step']}) of a run with other settings: "
        f"{'; '.join(diff)}. Resuming would change the data order or the step accounting: "
        "use a new --workdir, or pass --config.resume=force if you mean it"
    )
