# The two commands a fresh machine needs:  make demo   and   make test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := demo
SEED   ?= 7

.PHONY: demo test install lint clean-demo browser slurm

# Create the virtual environment and install tessera with the pinned versions.
# torch is installed first and alone so that it resolves to the CPU build (see README for CUDA).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Write the bundled demo cohort and run the whole workflow on it.
demo: $(STAMP)
	$(BIN)/tessera demo $(DEMO) --seed $(SEED)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --profile profiles/local

test: $(STAMP) browser slurm
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest

# The explain report's test drives a real headless browser (Debian's chromium): install it when it is
# missing and we may (root with apt-get); otherwise say loudly that the browser test will be skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the report browser test (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "WARNING: chromium is missing and cannot be installed here (needs root and apt-get):" \
	         "the explain report browser test will be SKIPPED" >&2; \
	  fi; }

# The SLURM tests start a one-node cluster with accounting (tests/slurm_cluster.py) from Debian's packages:
# install what is missing when we may (root with apt-get; others may run apt at the same time, so wait for
# its lock); otherwise say loudly that the SLURM tests will be skipped.
SLURM_PACKAGES := munge mariadb-server slurmdbd slurmctld slurmd slurm-client
SLURM_PROGRAMS := munged mariadbd slurmdbd slurmctld slurmd sbatch
slurm:
	@export PATH="$$PATH:/usr/sbin:/sbin"; missing=0; \
	for p in $(SLURM_PROGRAMS); do command -v $$p >/dev/null 2>&1 || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing SLURM, munge and MariaDB for the SLURM cluster tests (apt-get)"; \
	    apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get \
	      -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $(SLURM_PACKAGES) >/dev/null; \
	  else \
	    echo "WARNING: SLURM is missing and cannot be installed here (needs root and apt-get):" \
	         "the SLURM cluster tests will be SKIPPED" >&2; \
	  fi; fi

# Linting parses the workflow, which reads the cohort's sheets: the demo cohort serves.
$(DEMO)/slides.tsv: | $(STAMP)
	$(BIN)/tessera demo $(DEMO) --seed $(SEED)

lint: $(STAMP) $(DEMO)/slides.tsv
	$(BIN)/snakefmt --check Snakefile rules
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --lint
	$(BIN)/hadolint containers/Dockerfile

clean-demo:
	rm -rf $(DEMO) results logs .snakemake .tessera
