# Two commands for a fresh machine: `make demo` and `make test`. Everything is installed here, into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is only needed by the silero-vad speech check; pin the CPU build that this machine kind ships on disk.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	# the report's browser test opens report.html in Debian's headless Chromium (tests/test_report_browser.py)
	command -v chromium >/dev/null || (export DEBIAN_FRONTEND=noninteractive; apt-get update -q && \
		apt-get install -y -q --no-install-recommends chromium) </dev/null >/dev/null
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/voicechaos run scenarios/demo.yaml

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

# Benchmarks print ratios measured side by side; they are not tests and take a few minutes each.
bench: $(VENV)/.installed
	$(BIN)/python -m bench.caller_capacity
	$(BIN)/python -m bench.locust_capacity
	$(BIN)/python -m bench.locust_transports
	$(BIN)/python -m bench.webrtc_capacity
	$(BIN)/python -m bench.runtime_capacity
	$(BIN)/python -m bench.toxiproxy_throughput
	$(BIN)/python -m bench.report_scale

clean:
	rm -rf $(VENV) runs .pytest_cache
