# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
PIP = $(PYTHON) -m pip
# The CPU build of torch; for a CUDA build see README ("GPU").
TORCH ?= torch==2.13.0
APT_PACKAGES = dicom3tools dcmtk orthanc orthanc-dicomweb

.PHONY: install install-test system-deps test demo

install:
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e .

install-test: system-deps install
	$(PIP) install -q -e '.[test]'

# dciodvfy, storescu/storescp/echoscu and Orthanc for the tests (Debian packages).
# dcmtk is checked by path: pynetdicom installs its own storescu/storescp scripts,
# which shadow dcmtk's on PATH.
system-deps:
	@if [ -x /usr/bin/dciodvfy ] && [ -x /usr/bin/storescp ] && [ -x /usr/sbin/Orthanc ]; then \
		echo "system packages present"; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGES); \
	else \
		echo "run as root, or: sudo apt-get install -y $(APT_PACKAGES)" >&2; exit 1; \
	fi

test: install-test
	$(PYTHON) -m pytest -q

demo: install
	cfia phantom --out demo-out --count 4 --seed 1
