"""Shared test set-up: never reach a model hub; one torch thread where models are tiny."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SOFTSEG_OFFLINE", "1")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny convolutions gain nothing from a second thread, and on a busy 2-core machine two
    spin-waiting OpenMP threads made a tiny training step several times slower. Modules
    that run models use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
