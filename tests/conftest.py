"""Shared pytest fixtures."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """MTCNN runs its pyramid one small level at a time: with several OpenMP threads on a shared
    machine the threads spin at every op's barrier (10x slower); the batch aligner uses one too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
