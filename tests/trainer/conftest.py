import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The CI machine has 2 cores shared with other jobs; one intra-op thread avoids spin-wait thrash."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
