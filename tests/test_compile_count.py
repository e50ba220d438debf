"""No recompilation: two training epochs and two evaluations lower each step exactly once.

XLA compilations are counted with `jax.monitoring`: every jit cache miss lowers its jaxpr to
an MLIR module (the event fires whether or not the persistent compilation cache then has the
executable), so counting lowerings counts compilations as far as the process is concerned.
"""

import jax
from test_train import load_config, tiny

from aptpose_jax import run_builder, train

LOWERING = "/jax/core/compile/jaxpr_to_mlir_module_duration"


def test_nothing_compiles_after_the_first_step_of_each_function(demo_root, tmp_path, monkeypatch):
    phase = {"now": "setup"}
    lowered = []  # (phase, function name)

    def listener(event, duration, **kwargs):
        if event == LOWERING:
            lowered.append((phase["now"], kwargs.get("fun_name", "?")))

    original = run_builder.build_run
    calls = {"train": 0, "eval": 0, "save": 0}

    def build_run(config, workdir, *args, **kwargs):
        run = original(config, workdir, *args, **kwargs)
        for name in calls:
            attr = "save" if name == "save" else f"{name}_step"
            fn = getattr(run, attr)

            def counted(*args, _fn=fn, _name=name, **kwargs):
                # Everything from a call to the next counted call belongs to that call's phase.
                phase["now"] = f"{_name}{calls[_name]}"
                calls[_name] += 1
                return _fn(*args, **kwargs)

            setattr(run, attr, counted)
        return run

    monkeypatch.setattr(run_builder, "build_run", build_run)
    config = tiny(
        load_config("h36m_finetune", "demo"),
        demo_root,
        **{"init.from_workdir": "", "optim.num_epochs": 2, "optim.max_steps_per_epoch": 4,
           "eval.every_epochs": 1, "eval.max_batches": 3, "model.frames": 9,
           "model.layers": 1},
    )  # fmt: skip
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        train.train_and_evaluate(config, str(tmp_path / "run"))
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    listing = "\n".join(f"{p}: {f}" for p, f in lowered)
    (tmp_path / "lowered.txt").write_text(listing)
    assert calls == {"train": 8, "eval": 6, "save": 2}
    # The steps themselves: lowered once each, during their first call.
    steps_lowered = [(p, f) for p, f in lowered if "train_step" in f or "eval_step" in f]
    assert [p for p, _ in steps_lowered] == ["train0", "eval0"], listing
    # Nothing else but the first checkpoint save (orbax slices each array shape once): epoch 2,
    # evaluation 2 and the second save run exactly what their first calls compiled.
    late = [(p, f) for p, f in lowered if p not in ("setup", "train0", "eval0", "save0")]
    assert late == [], listing
