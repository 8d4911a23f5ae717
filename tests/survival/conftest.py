"""Fixtures of the survival tests: fabricated cohorts in the upstream stages' file formats."""

import pytest
import torch

from survival_fabricate import fabricate_cohort


@pytest.fixture(scope="session")
def cohort_files(tmp_path_factory):
    """A 60-patient fabricated cohort with a planted signal (see survival_fabricate.py)."""
    return fabricate_cohort(tmp_path_factory.mktemp("cohort"), n=60, seed=3)


@pytest.fixture(autouse=True)
def _few_threads():
    """Small models run fastest on one thread; results then also match between machines."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
