# The two commands of the README: `make demo` and `make test`. Everything else is set up by them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-lossless corpus clean bench-rate bench-ablation nncodec-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,examples,analysis,plot,dask]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(VENV)/bin/ruff check src tests tools examples
	$(PY) -m pytest

corpus: $(STAMP)
	$(PY) tools/fetch_models.py

# Comparators live in their own venv: ZipNN imports torch, which must be the local CPU build.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(BENCH_VENV)/bin/python -m pip install --quiet -e . zipnn==0.5.4
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python tools/bench_compression.py --markdown
	$(BENCH_VENV)/bin/python tools/bench_speed.py --large --markdown

# Lossless only: sizes per dtype (also the corpus cast to bfloat16/float16) and decode speed.
bench-lossless: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python tools/bench_lossless.py --markdown $(BENCH_ARGS)

# Rate bench (tools/bench_rate.py): task data and pre/post-processing in .venv (extra
# "ratebench"); NNCodec, the MPEG NNR reference codec, in its own venv with the local torch
# build and numpy 1.26 (tools/comparators/nncodec-pins.txt), built from source.
RATE_STAMP := $(VENV)/.installed-ratebench
NNCODEC_VENV := .venv-nncodec
NNCODEC_STAMP := $(NNCODEC_VENV)/.installed

$(RATE_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e ".[test,examples,ratebench]"
	touch $(RATE_STAMP)

$(NNCODEC_STAMP): tools/comparators/nncodec-pins.txt
	$(PYTHON) -m venv $(NNCODEC_VENV)
	$(NNCODEC_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(NNCODEC_VENV)/bin/python -m pip install --quiet -c tools/comparators/nncodec-pins.txt \
		--no-binary nncodec nncodec==2.1.3
	touch $(NNCODEC_STAMP)

nncodec-venv: $(NNCODEC_STAMP)

bench-rate: $(RATE_STAMP) $(NNCODEC_STAMP)
	$(PY) tools/fetch_models.py --unseen
	$(PY) tools/bench_rate.py --json bench-rate.json

bench-ablation: $(RATE_STAMP) $(NNCODEC_STAMP)
	$(PY) tools/bench_rate.py magika silero_vad silero_vad_half ppocr_det ppocr_cls \
		--ablation --json bench-ablation.json

clean:
	rm -rf $(VENV) $(BENCH_VENV) $(NNCODEC_VENV) .pytest_cache
