# modelyard: two commands from a fresh clone.
#   make demo   creates the environment, installs, runs the main job (NILM end to end)
#   make test   creates or updates the environment, runs the whole suite
# Everything else here is a building block of those two.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Local mirror of the datasets; the upstream URLs in the config are used when it is absent.
DATA_ROOT ?= $(abspath ../shared/datasets)
NILM_SOURCE := $(if $(wildcard $(DATA_ROOT)/nilm),$(DATA_ROOT)/nilm,)
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck venv lock postgres promtool chromium containers clean help

help:
	@echo "make demo   - set up and run the NILM pipeline end to end (fetch .. HTTP prediction)"
	@echo "make test   - set up and run lint, type checks and the whole test suite"

# torch is installed first with its exact pin: an unpinned resolver would fetch CUDA wheels.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[train,dev]"
	touch $(STAMP)

venv: $(STAMP)

# requirements.lock: what a fresh venv with every extra resolves to today, as pip constraints.
LOCK_VENV := .lock-venv
ALL_EXTRAS := train,wandb,postgres,loadtest,monitor,ui,docs,dev
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet "torch==2.13.0"
	$(LOCK_VENV)/bin/python -m pip install --quiet ".[$(ALL_EXTRAS)]"
	{ sed -n '/^#/p' requirements.lock; $(LOCK_VENV)/bin/pip freeze --exclude modelyard \
		| sed 's/^torch==.*/torch==2.13.0/'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf $(LOCK_VENV)

demo: $(STAMP)
	$(BIN)/modelyard demo $(if $(NILM_SOURCE),--source $(NILM_SOURCE),)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks docs/hooks docker
	$(BIN)/ruff format --check src tests benchmarks docs/hooks docker

typecheck: $(STAMP)
	$(BIN)/mypy

# $(call apt_need,CHECK,PACKAGE,OTHERWISE): when the shell test CHECK fails, install the Debian
# PACKAGE (as root with apt), else run OTHERWISE (say what to do, and fail or not).
apt_need = @if $(1) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $(2) >/dev/null; \
	else $(3); fi

# The prediction-log tests start their own PostgreSQL server (127.0.0.1 only) from Debian's
# postgresql package; install it when it is missing and we may (root with apt), else they skip.
postgres:
	$(call apt_need,ls /usr/lib/postgresql/*/bin/initdb,postgresql,echo "PostgreSQL not installed: its tests will skip (apt-get install postgresql)")

# The alert rules' tests (deploy/monitoring/) run promtool from Debian's prometheus package;
# they never skip, so install it when missing (root with apt), else stop with what to do.
promtool:
	$(call apt_need,command -v promtool,prometheus,echo "promtool missing (as root: apt-get install prometheus)" >&2; exit 1)

# The web UI's tests drive Debian's chromium headless through Playwright (its own browser
# download is not used); they never skip, so install it when missing (root with apt).
chromium:
	$(call apt_need,command -v chromium,chromium,echo "chromium missing (as root: apt-get install chromium)" >&2; exit 1)

# The container tests build and run the images (docker/) with Debian's buildah (no Docker
# engine needed) on a base made by debootstrap; they never skip where apt can install these.
containers:
	$(call apt_need,test -x /usr/bin/buildah -a -x /usr/bin/podman -a -x /usr/sbin/debootstrap,buildah podman debootstrap,echo "buildah/podman/debootstrap missing (as root: apt-get install buildah podman debootstrap)" >&2; exit 1)

test: $(STAMP) lint typecheck postgres promtool chromium containers
	MODELYARD_DATA_ROOT=$(DATA_ROOT) $(BIN)/pytest -q

clean:
	rm -rf $(VENV) .modelyard .pytest_cache .mypy_cache .ruff_cache

# The documentation site (mkdocs.yml): built strictly (a broken link fails) into build/site/;
# docs-serve serves it with live reload on http://127.0.0.1:8001.
.PHONY: docs docs-serve
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

docs-serve: $(STAMP)
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

# The container images (docs/containers.md): modelyard-serve, modelyard-serve-registry (serve +
# registry: pulls models:/NAME@ALIAS at start), modelyard-app (serve + ui,monitor,registry) and
# modelyard-train (CPU torch), built with buildah from a wheelhouse of requirements.lock; the size
# of each is printed. IMAGE_BUNDLE=DIR bakes a bundle into serve, serve-registry and app.
.PHONY: images
images: $(STAMP) containers
	$(BIN)/python docker/build_images.py serve serve-registry app train $(if $(IMAGE_BUNDLE),--bundle $(IMAGE_BUNDLE),)
