"""One list per kind of name: the modules that implement them agree with the registry."""

from __future__ import annotations

import pytest

from edgewise.edge.errors import EdgewiseError
from edgewise.trainer import registry
from tests.conftest import needs_host


@needs_host
def test_implementations_match_the_registry() -> None:
    from edgewise.trainer.datasets import BUILTIN
    from edgewise.trainer.deep import DEEP_MODELS
    from edgewise.trainer.models import FACTORIES

    assert tuple(BUILTIN) == registry.TABULAR_DATASETS
    assert DEEP_MODELS == registry.NETWORKS
    for task, names in registry.CLASSICAL.items():
        assert set(FACTORIES[task]()) == set(names), task


@pytest.mark.parametrize(
    ("check", "name", "listed"),
    [
        (registry.check_dataset, "winee", registry.DATASETS),
        (registry.check_model, "forest", registry.all_models()),
    ],
)
def test_errors_list_every_name(check: object, name: str, listed: object) -> None:
    with pytest.raises(EdgewiseError) as info:
        check(name)  # type: ignore[operator]
    assert all(n in str(info.value) for n in listed)  # type: ignore[attr-defined]
    assert "vibration" in str(registry.DATASETS) and "cnn1d" in registry.all_models()
