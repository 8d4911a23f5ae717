"""tessera: slides, genomes and outcomes turned into features, survival models and reports.

The library never imports Snakemake; the workflow's scripts are thin adapters around it.
"""

__version__ = "0.1.0"
