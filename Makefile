.PHONY: setup demo test test-numerics lint bench
setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/ncprompt demo

test: setup
	.venv/bin/python -m pytest tests -q -p no:cacheprovider

# the `numerics` tests again under lower CPU kernels and 1 / 2 threads (docs/reliability.md)
test-numerics: setup
	for cap in avx2 default; do for t in 1 2; do echo "[numerics] ATEN_CPU_CAPABILITY=$$cap threads=$$t"; \
	  ATEN_CPU_CAPABILITY=$$cap NCPROMPT_TEST_THREADS=$$t .venv/bin/python -m pytest tests -q -p no:cacheprovider \
	  -m numerics || exit 1; done; done

lint: setup
	.venv/bin/ruff check src tests benchmarks

bench: setup
	.venv/bin/python benchmarks/bench_coop_step.py
