"""Shared fixtures. Tests run on CPU with a fixed thread count so timings and results are stable."""

import pytest
import torch

# One intra-op thread per test worker: two workers share two cores, and oversubscribed OpenMP
# threads stall each other (a tiny training step went from under 1 ms to 250 ms).
torch.set_num_threads(1)


@pytest.fixture
def seeded():
    torch.manual_seed(0)
    return torch.Generator().manual_seed(0)
