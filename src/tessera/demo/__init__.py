"""The bundled demo cohort: synthetic slides and genomes with a planted survival signal, plus a real slide."""

from tessera.demo.cohort import make_demo_cohort

__all__ = ["make_demo_cohort"]
