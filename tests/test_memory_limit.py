"""SLIDE_MEMORY_LIMIT_MB means one thing for every method: it can lower the memory limit, never raise it."""

import types

import psutil
import pytest

from slide.errors import ConfigError, ResourceError
from slide.resources import memory_limit_bytes

MiB = 2**20


@pytest.fixture
def free_mib(monkeypatch):
    """Pretend the machine has ``n`` MiB available."""
    def set_free(n):
        monkeypatch.setattr(psutil, "virtual_memory", lambda: types.SimpleNamespace(available=n * MiB, total=2 * n * MiB))
    return set_free


def test_the_smaller_of_available_memory_and_the_variable(monkeypatch, free_mib):
    free_mib(1000)
    monkeypatch.delenv("SLIDE_MEMORY_LIMIT_MB", raising=False)
    assert memory_limit_bytes() == (1000 * MiB, "available memory")
    monkeypatch.setenv("SLIDE_MEMORY_LIMIT_MB", "250")
    assert memory_limit_bytes() == (250 * MiB, "SLIDE_MEMORY_LIMIT_MB=250")
    monkeypatch.setenv("SLIDE_MEMORY_LIMIT_MB", "5000")  # above what is free: no effect
    assert memory_limit_bytes() == (1000 * MiB, "available memory")
    for bad in ("lots", "0", "-5", "nan", "inf"):
        monkeypatch.setenv("SLIDE_MEMORY_LIMIT_MB", bad)
        with pytest.raises(ConfigError, match="SLIDE_MEMORY_LIMIT_MB"):
            memory_limit_bytes()


def test_slide_cannot_be_given_more_than_is_available(monkeypatch, free_mib):
    """The SLIDE engine used to take the variable instead of the available memory."""
    from slide.engine import SlideMethod

    free_mib(1)
    monkeypatch.setenv("SLIDE_MEMORY_LIMIT_MB", str(10**6))
    with pytest.raises(ResourceError, match="available memory"):
        SlideMethod.from_config(200, 300, overrides=dict(hidden=[16]), seed=0, threads=1)


def test_every_method_uses_the_one_helper():
    import baselines.tf.method as tf_method
    from slide.engine import model

    assert model.memory_limit_bytes is memory_limit_bytes
    assert tf_method.memory_limit_bytes is memory_limit_bytes
    pytest.importorskip("torch")
    import baselines.torch.method as torch_method

    assert torch_method.memory_limit_bytes is memory_limit_bytes
