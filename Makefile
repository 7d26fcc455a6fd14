# Flux Box firmware. `make run` and `make test` are all the set-up a fresh Debian machine needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Building dbus-python (no wheel) needs the D-Bus and GLib headers.
BUILD_PACKAGES := gcc python3-dev pkg-config libdbus-1-dev libglib2.0-dev
# Real peers and stand-ins for the tests: modality and PACS, GPS replay, D-Bus, namespaces;
# GDCM's gdcmscu and dicom3tools' dciodvfy for the interoperability matrix; nftables.
APT_PACKAGES := $(BUILD_PACKAGES) dcmtk orthanc gpsd gpsd-clients dbus iproute2 tmux openssl \
	nftables libgdcm-tools dicom3tools
# The bench counts the box's sync calls with perf (strace if perf cannot).
BENCH_PACKAGES := linux-perf strace
STAMP := $(VENV)/.installed

.PHONY: run test unit quick soak bench bench-air bench-pdu fuzz lint deps apt build-deps python-venv clean

run: python-venv build-deps $(STAMP)
	$(VENV)/bin/fluxbox run

test: python-venv apt $(STAMP)
	$(PY) -m pytest -q tests

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

# The quick loop: every test but the slow ones and the interoperability matrix (make test runs all).
quick: python-venv apt $(STAMP)
	$(PY) -m pytest -q -m "not slow and not interop" tests

# The stateful model of the store and delivery, long: at least 10,000 random steps.
soak: $(STAMP)
	FLUXBOX_SOAK=1 $(PY) -m pytest -q -s tests/unit/test_store_model.py -k no_sequence

bench: apt $(STAMP)
	@$(MAKE) --no-print-directory apt APT_PACKAGES="$(BENCH_PACKAGES)"
	$(PY) -m tests.bench.run

# Over the air: emulated LTE and Wi-Fi links in network namespaces (root).
bench-air: apt $(STAMP)
	$(PY) -m tests.bench.run --air

# Ingest rate and peak memory against box.max_pdu (how the default was chosen).
bench-pdu: apt $(STAMP)
	$(PY) -m tests.bench.pdu

# The fuzz campaign of `make test`, for FUZZ_S seconds (crashers go to tests/fuzz/crashers.jsonl).
FUZZ_S ?= 600
fuzz: apt $(STAMP)
	$(PY) -m tests.fuzz.run --seconds $(FUZZ_S)

# All of appliance/ is held to mypy --strict. pynetdicom's events are typed at one
# boundary, appliance/dimse.py.
lint: $(STAMP)
	$(VENV)/bin/ruff check appliance hw tests
	$(PY) -m mypy --strict appliance

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

# ---------------------------------------------------------------------------- firmware image
# Targets of the disk image (image/README.md). Everything lands in build/image/.
#   make image          build/image/fluxbox.img (+ .bmap, SBOM, inputs/): pinned Debian + the appliance
#                       (FLUXBOX_INPUTS=dir: from a build's exported inputs alone, offline)
#   make image-test     boot the test variant in QEMU: store, deliver, power cut, deliver
#   make image-check    build, then rebuild from its exported inputs offline; compare bit for bit
#   make image-lock     take the mirror's and PyPI's current versions into the lock files
#   make image-refresh  security updates: image-lock, then build and test the image; commit the locks
#   make image-run      boot build/image/fluxbox.img in QEMU on this terminal
#   make bundle         a signed RAUC bundle of the root file system (test CA in build/image/pki)
#   make image-update-test   update the test image in QEMU: into B and boot it; a broken update falls back
IMAGE_OUT := build/image
IMAGE_HOST_PACKAGES := mmdebstrap genimage e2fsprogs dosfstools mtools fdisk bmap-tools \
	qemu-system-x86 qemu-utils ovmf rauc squashfs-tools openssl git dpkg-dev python3-venv nftables
# Inputs of the image: the appliance and the image's own files (not its test scripts).
IMAGE_INPUTS := $(filter-out image/vmtest.py image/updatetest.py image/qemu.py image/relay.py image/check.sh \
	image/lock.sh image/rauc/bundle.sh image/test-requirements.% image/test/%, \
	$(shell git ls-files -co --exclude-standard pyproject.toml appliance hw image 2>/dev/null))

.PHONY: image image-deps image-test image-check image-lock image-refresh image-run bundle image-update-test image-test-deps

image-deps:
	@$(MAKE) --no-print-directory apt APT_PACKAGES="$(IMAGE_HOST_PACKAGES)"

image: image-deps $(IMAGE_OUT)/fluxbox.img

# A build from exported inputs always runs (the image on disk may be any other build).
$(IMAGE_OUT)/fluxbox.img: $(IMAGE_INPUTS) $(if $(FLUXBOX_INPUTS)$(FLUXBOX_OFFLINE),FORCE)
	image/build.sh $(IMAGE_OUT)

.PHONY: FORCE
FORCE:
# A failed build leaves no target that make would take for done.
.DELETE_ON_ERROR:

$(IMAGE_OUT)/fluxbox-test.img: $(IMAGE_OUT)/fluxbox.img image/test/fluxbox.toml image/mkdisk.sh
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct) image/mkdisk.sh $(IMAGE_OUT)/rootfs.tar $(IMAGE_OUT) fluxbox-test

# The test scripts run in the project's venv (pydicom, tests/peers.py) plus pexpect.
image-test-deps: image python-venv
	@$(MAKE) --no-print-directory apt APT_PACKAGES="dcmtk orthanc"
	@$(MAKE) --no-print-directory $(STAMP) $(IMAGE_OUT)/fluxbox-test.img
	@$(PY) -c 'import pexpect' 2>/dev/null || $(PY) -m pip install -q --require-hashes -r image/test-requirements.txt

image-test: image-test-deps
	timeout 900 $(PY) image/vmtest.py --image $(IMAGE_OUT)/fluxbox-test.img

bundle: image
	image/rauc/bundle.sh $(IMAGE_OUT)

# The test image updates to variants of its own slot (they keep the serial autologin): one
# with another version, one with another version and an appliance that cannot start.
image-update-test: image-test-deps
	image/rauc/testslot.sh $(IMAGE_OUT)/fluxbox-test-rootfs.ext4 $(IMAGE_OUT)/fluxbox-update-rootfs.ext4 -update
	image/rauc/testslot.sh $(IMAGE_OUT)/fluxbox-test-rootfs.ext4 $(IMAGE_OUT)/fluxbox-broken-rootfs.ext4 -broken broken
	image/rauc/bundle.sh $(IMAGE_OUT) fluxbox-update
	image/rauc/bundle.sh $(IMAGE_OUT) fluxbox-broken
	rm -f $(IMAGE_OUT)/fluxbox-update-rootfs.ext4 $(IMAGE_OUT)/fluxbox-broken-rootfs.ext4
	timeout 1800 $(PY) image/updatetest.py --image $(IMAGE_OUT)/fluxbox-test.img \
		--bundle $(IMAGE_OUT)/fluxbox-update.raucb --broken $(IMAGE_OUT)/fluxbox-broken.raucb

image-check: image
	image/check.sh $(IMAGE_OUT)

image-lock: image-deps
	image/lock.sh

# Security updates in one command: new locks, then the image built and tested with them.
image-refresh: image-lock
	@FLUXBOX_LOCK_STRICT=1 $(MAKE) --no-print-directory image-test
	@echo "image-refresh: tested; commit: git commit -m 'Image: security updates' image/packages.lock image/*requirements.txt"

image-run: image
	python3 image/qemu.py $(IMAGE_OUT)/fluxbox.img --snapshot
# ------------------------------------------------------------------------ end firmware image

# ------------------------------------------------------------------------ Buildroot external tree
# Offline checks of buildroot/ (the BR2_EXTERNAL tree) against a Buildroot source tree:
#   make buildroot-check BUILDROOT=/path/to/buildroot [BUILDROOT_OUT=dir] [BUILDROOT_SOURCES=1]
# Without BUILDROOT it explains what it checks and how to get one. See buildroot/README.md.
BUILDROOT ?=
BUILDROOT_OUT ?=

.PHONY: buildroot-check
buildroot-check:
	@BUILDROOT_SOURCES="$(BUILDROOT_SOURCES)" bash buildroot/check.sh "$(BUILDROOT)" $(BUILDROOT_OUT)
# ------------------------------------------------------------------------ end Buildroot external tree
