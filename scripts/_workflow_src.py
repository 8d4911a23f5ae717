"""Put this workflow's ``src/`` first on ``sys.path``, so ``import tessera`` finds the checkout's code.

Every script imports this module before tessera. Snakemake adds a script's own directory to
``sys.path`` (the script runs from a copy under ``.snakemake/scripts/``), so this file is found there.
It lets the per-rule conda environments (``--software-deployment-method conda``, ``envs/*.yaml``) hold
only the pinned third-party packages: installing tessera into each of them would pull every stage's
dependencies (torch, snakemake...) into every environment, and could install code other than the
checkout that runs. Where ``src/`` is absent (an installed tessera in a container), nothing changes.
"""

import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
if (SRC / "tessera").is_dir() and str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))
