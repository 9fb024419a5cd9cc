# Two commands on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
# Some images set PYTHONDONTWRITEBYTECODE: then every daemon and CLI process the tests
# start compiles our ~400 modules again (~0.7 s of CPU each). Recipes write bytecode.
unexport PYTHONDONTWRITEBYTECODE
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-long lint bench clean system-deps js-deps sim-golden sim-compiled faults faults-real fuzz-api

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Run the most complete end-to-end demo (a local colony on 127.0.0.1).
demo: $(STAMP)
	$(VENV)/bin/colony demo

## Debian packages the Slurm executor tests need (a real slurmctld + slurmd + munged).
## Idempotent; without root, apt-get or network it warns and the Slurm tests skip.
system-deps:
	@if command -v sbatch >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "warning: sbatch not found and apt-get unusable (not root?): Slurm tests will skip" >&2; \
	else \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get update -qq && apt-get install -y -qq slurm-wlm munge >/dev/null; } \
	    || echo "warning: apt-get install slurm-wlm munge failed (offline?): Slurm tests will skip" >&2; \
	fi
	@# Edge/NAT tests (issue 10): iptables MASQUERADE, nft loss rules, coturn STUN/TURN,
	@# ethtool (offloads off on the delay line's links). Same warn-and-skip rule.
	@if command -v iptables >/dev/null 2>&1 && command -v nft >/dev/null 2>&1 \
	   && command -v turnserver >/dev/null 2>&1 && command -v ethtool >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "warning: iptables/nft/turnserver/ethtool missing and apt-get unusable: NAT tests will skip" >&2; \
	else \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
	      iptables nftables coturn ethtool >/dev/null; } \
	    || echo "warning: apt-get install iptables nftables coturn ethtool failed: NAT tests will skip" >&2; \
	fi
	@# Clock-skew fault runs: libfaketime (one daemon's clock moved). Same warn-and-skip rule.
	@if command -v faketime >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "warning: faketime missing and apt-get unusable: clock-skew fault runs will skip" >&2; \
	else \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends faketime >/dev/null; } \
	    || echo "warning: apt-get install faketime failed: clock-skew fault runs will skip" >&2; \
	fi
	@# Dashboard browser tests: Debian's Chromium (+ its driver), driven by Playwright for
	@# Python pointed at /usr/bin/chromium (never `playwright install`). Same rule.
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "warning: chromium missing and apt-get unusable: dashboard browser tests will skip" >&2; \
	else \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
	      chromium chromium-driver >/dev/null; } \
	    || echo "warning: apt-get install chromium chromium-driver failed: dashboard browser tests will skip" >&2; \
	fi

## npm packages of the JS interop tests (js-libp2p, helia, @ipld/car…), all at once
## (tests/integration/js_deps.py). Warns and goes on without node/npm or a registry:
## each test then installs what is missing itself, or skips.
js-deps:
	$(PYTHON) tests/integration/js_deps.py

## Install what the tests need and run the whole suite (unit, property, sim, integration).
test: $(STAMP) system-deps js-deps
	$(PY) -m compileall -q -j 2 overlay gossip dht store sim > /dev/null
	$(PY) -m pytest -q -n 2 --dist loadgroup

## ruff, mypy --strict on the whole tree (packages, tests/ and bench/: [tool.mypy]'s
## files, mypy_path and explicit_package_bases) and the import-linter contracts of
## DESIGN §1 ([tool.importlinter]); CI runs this before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## Re-pin the simulator's golden outputs (only for a change meant to alter behaviour).
sim-golden: $(STAMP)
	PYTHONPATH=. $(PY) tests/sim/test_sim_golden.py --update

## Opt-in mypyc-compiled copy of the simulator's hot path (sim/compiled_build.py): copies
## the packages to .build/mypyc/ (git-ignored), compiles its modules there, then runs the
## golden and determinism tests in the copy and checks the compiled code was imported.
## Use it with PYTHONPATH=.build/mypyc; `bench/sim.py --compiled` compares it with pure
## Python. The tree stays pure Python; CI and `make test` compile nothing.
sim-compiled: $(STAMP)
	PYTHONPATH=. $(PY) -m sim.compiled_build --check

## The simulated fault campaign, long version (tests/sim/test_campaign.py runs 11 seeds):
## random fault schedules over a capsule workload, invariants checked after every step.
## Prints seeds/minute, violations per invariant and a replay command per failure.
FAULT_SEEDS ?= 500
REAL_FAULT_SEEDS ?= 1
faults: $(STAMP)
	PYTHONPATH=. $(VENV)/bin/colony sim campaign --seeds $(FAULT_SEEDS)

## Real daemons under faults (root + network namespaces for the partition; skips with
## the reason otherwise): a 10-node colony in namespaces, 200 capsules, a 3/7 partition
## held 60 s, healed (bench/faults_real.py); then kill -9 of random daemons in a loop
## during fetches and capsule runs (bench/faults_kill.py, ~5 min). Short versions in
## the suite: tests/integration/test_faults_*.py.
test-long: $(STAMP) system-deps
	$(PY) -m pytest -q -m long

## The OpenAPI fuzz of every POST route with many more examples than the suite's 20:
## a daemon that stops, or a 5xx, fails it (tests/integration/test_api_openapi.py).
FUZZ_EXAMPLES ?= 500
fuzz-api: $(STAMP)
	COLONY_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q \
		tests/integration/test_api_openapi.py -k generated_bad_input

faults-real: $(STAMP) system-deps
	PYTHONPATH=. $(PY) bench/faults_real.py
	PYTHONPATH=. $(PY) bench/faults_kill.py --seeds $(REAL_FAULT_SEEDS)

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build .build *.egg-info .pytest_cache .mypy_cache .ruff_cache
