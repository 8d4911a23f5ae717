"""Fixtures of the genomics tests."""

from __future__ import annotations

import pytest
from genomics_data import SyntheticCase, make_synthetic_case


@pytest.fixture(scope="module")
def synthetic_case(tmp_path_factory) -> SyntheticCase:
    return make_synthetic_case(tmp_path_factory.mktemp("synthetic"))
