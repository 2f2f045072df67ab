"""Shared test setup: every test starts from the same torch seed and an empty torch.compile cache."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Dynamo caches graphs per code object: without a reset, the update steps of many tests' phases pile up
    as recompilations of one function (and reach its recompile limit)."""
    torch.compiler.reset()
    yield
