# Flux Box firmware. `make run` and `make test` are all the set-up a fresh Debian machine needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Building dbus-python (no wheel) needs the D-Bus and GLib headers.
BUILD_PACKAGES := gcc python3-dev pkg-config libdbus-1-dev libglib2.0-dev
# Real peers and stand-ins for the tests: modality and PACS, GPS replay, D-Bus, namespaces.
APT_PACKAGES := $(BUILD_PACKAGES) dcmtk orthanc gpsd gpsd-clients dbus iproute2 tmux openssl
STAMP := $(VENV)/.installed

.PHONY: run test unit bench lint deps apt build-deps python-venv clean

run: python-venv build-deps $(STAMP)
	$(VENV)/bin/fluxbox run

test: python-venv apt $(STAMP)
	$(PY) -m pytest -q tests

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

bench: apt $(STAMP)
	$(PY) -m tests.bench.run

lint: $(STAMP)
	$(VENV)/bin/ruff check appliance hw tests

deps: $(STAMP)

# Debian's python3 needs python3-venv before it can make the virtual environment.
python-venv:
	@python3 -c 'import ensurepip, venv' 2>/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq python3-venv; }

build-deps:
	@$(MAKE) --no-print-directory apt APT_PACKAGES="$(BUILD_PACKAGES)"

# Debian packages the tests use as real peers (modality, PACS, worklist server).
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[hw,test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) var build *.egg-info
