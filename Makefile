.PHONY: setup demo test lint bench
setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/ncprompt demo

test: setup
	.venv/bin/python -m pytest tests -q -p no:cacheprovider

lint: setup
	.venv/bin/ruff check src tests benchmarks

bench: setup
	.venv/bin/python benchmarks/bench_coop_step.py
