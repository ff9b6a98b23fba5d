"""The public names: everything in __all__ exists, is sorted, and nothing else leaks."""

from __future__ import annotations

import llmtally


def test_all_is_sorted_and_resolvable() -> None:
    assert list(llmtally.__all__) == sorted(llmtally.__all__)
    for name in llmtally.__all__:
        assert hasattr(llmtally, name), name


def test_design_names_are_public() -> None:
    for name in ("EventStore", "SyncConfig", "PricingManager", "Provider", "infer_provider"):
        assert name in llmtally.__all__


def test_exported_classes_claim_the_package() -> None:
    for name in llmtally.__all__:
        obj = getattr(llmtally, name)
        module = getattr(obj, "__module__", "llmtally")
        assert module.startswith("llmtally"), (name, module)
