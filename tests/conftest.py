"""Shared test settings: deterministic hypothesis runs and one torch thread."""

import os

import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
# The tests use small tensors: extra threads only add overhead (and contention on a busy machine).
torch.set_num_threads(1)
