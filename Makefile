# One-command entry points. VENV can be overridden (CI uses a fresh temporary one).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install install-test demo demo-clean test test-slow lint

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# Stage I -> Stage II -> evaluation on the embedded demo data (generated on first use), then
# "your own video": the fine-tuned model lifts the demo's synthetic Detectron COCO keypoints
# of one test sequence and renders workdirs/demo/video/pose3d.mp4 and frames.png, with the
# sequence's 3D ground truth beside the prediction (--with-gt; errors in summary.json).
# Re-running resumes from the checkpoints in workdirs/demo; `make demo-clean` starts afresh.
demo: install
	$(PY) -m aptpose_jax.main --config=configs/h36m_pretrain.py:demo --workdir=workdirs/demo/pretrain
	$(PY) -m aptpose_jax.main --config=configs/h36m_finetune.py:demo --workdir=workdirs/demo/finetune
	$(PY) -m aptpose_jax.main --config=configs/h36m_eval.py:demo --workdir=workdirs/demo/eval
	$(PY) -m aptpose_jax.datasets.demo_video --root data/demo --out data/demo/data_2d_custom_demo.npz
	rm -rf workdirs/demo/video
	$(PY) -m aptpose_jax.infer --keypoints data/demo/data_2d_custom_demo.npz --weights workdirs/demo/finetune --out workdirs/demo/video \
		--with-gt

demo-clean:
	rm -rf workdirs/demo

test: install-test
	$(PY) -m pytest -q tests

# The slow soak test (deselected by `make test`): ten kill -9s of a small demo run.
test-slow: install-test
	$(PY) -m pytest -q -m slow tests

lint: install-test
	$(PY) -m pip install -q ruff
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
