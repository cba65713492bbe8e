# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
PIP = $(PYTHON) -m pip
# torch as pinned; for a CUDA build see README ("GPU").
TORCH ?= torch==2.13.0
APT_PACKAGES = dicom3tools dcmtk orthanc orthanc-dicomweb openssl
# A mirror's transient failure is retried rather than failing a CI run.
APT_RETRIES = -o Acquire::Retries=3
# The viewer test (tests/test_viewer_ohif.py): Debian's Chromium and its WebDriver, and
# the prebuilt OHIF viewer from npm, pinned by version and integrity, unpacked into a
# cache folder outside git (tests/harness/ohif.py reads CFIA_OHIF_DIR).
VIEWER_APT_PACKAGES = chromium chromium-driver
OHIF_VERSION = 3.13.2
OHIF_INTEGRITY = sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA==
OHIF_CACHE ?= $(HOME)/.cache/cfia/ohif
export CFIA_OHIF_DIR ?= $(OHIF_CACHE)/$(OHIF_VERSION)/package/dist

.PHONY: install install-test system-deps viewer-deps test test-viewer demo

install:
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e .

install-test: system-deps install
	$(PIP) install -q -e '.[test]'

# dciodvfy, storescu/storescp/echoscu and Orthanc for the tests (Debian packages).
# dcmtk is checked by path: pynetdicom installs its own storescu/storescp scripts,
# which shadow dcmtk's on PATH.
system-deps:
	@if [ -x /usr/bin/dciodvfy ] && [ -x /usr/bin/storescp ] && [ -x /usr/sbin/Orthanc ] && [ -x /usr/bin/openssl ] \
		&& [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then \
		echo "system packages present"; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -q $(APT_RETRIES) && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_RETRIES) $(APT_PACKAGES); \
	else \
		echo "run as root, or: sudo apt-get install -y $(APT_PACKAGES)" >&2; exit 1; \
	fi

# Chromium + chromedriver (apt, as root) and OHIF's dist/ (npm pack; npm from apt if missing).
viewer-deps:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && command -v npm >/dev/null; then \
		echo "chromium, chromedriver and npm present"; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -q $(APT_RETRIES) && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_RETRIES) $(VIEWER_APT_PACKAGES) \
			$$(command -v npm >/dev/null || echo npm); \
	else \
		echo "run as root, or: sudo apt-get install -y $(VIEWER_APT_PACKAGES) npm" >&2; exit 1; \
	fi
	@if [ -f "$(CFIA_OHIF_DIR)/index.html" ]; then \
		echo "OHIF $(OHIF_VERSION) present in $(CFIA_OHIF_DIR)"; \
	else \
		set -e; dir="$(OHIF_CACHE)/$(OHIF_VERSION)"; mkdir -p "$$dir"; \
		for try in 1 2 3; do \
			tgz=$$(cd "$$dir" && npm pack --silent "@ohif/app@$(OHIF_VERSION)" | tail -n 1) || tgz=""; \
			if [ -n "$$tgz" ] && [ -f "$$dir/$$tgz" ]; then break; fi; \
			echo "npm pack @ohif/app@$(OHIF_VERSION) failed (try $$try of 3)" >&2; tgz=""; sleep $$((try * 10)); \
		done; \
		if [ -z "$$tgz" ]; then echo "@ohif/app@$(OHIF_VERSION): could not download it from npm" >&2; exit 1; fi; \
		got=$$($(PYTHON) -c 'import base64, hashlib, sys; print("sha512-" + base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$$dir/$$tgz"); \
		if [ "$$got" != "$(OHIF_INTEGRITY)" ]; then echo "@ohif/app@$(OHIF_VERSION): integrity $$got, expected $(OHIF_INTEGRITY)" >&2; rm -f "$$dir/$$tgz"; exit 1; fi; \
		tar xzf "$$dir/$$tgz" -C "$$dir" --exclude='*.map' package/dist package/package.json; \
		rm -f "$$dir/$$tgz"; \
		echo "OHIF $(OHIF_VERSION) unpacked into $(CFIA_OHIF_DIR)"; \
	fi

test: install-test viewer-deps
	$(PYTHON) -m pytest -q

# Only the viewer test (OHIF in headless Chromium on Orthanc).
test-viewer: install-test viewer-deps
	$(PYTHON) -m pytest -q -m viewer

# The embedded default end to end on loopback: phantom -> cfia serve -> results in ./demo-out/.
demo: install
	$(PYTHON) -m cfia.cli demo
