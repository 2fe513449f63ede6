"""One colour and one label per method, used by every figure and table (declared with each method
in its adapter's schema file; see :mod:`slide.method_registry`)."""

from __future__ import annotations

from slide.method_registry import REGISTRY

METHODS = tuple(REGISTRY)
METHOD_COLORS = {name: s.colour for name, s in REGISTRY.items()}
METHOD_LABELS = {name: s.label for name, s in REGISTRY.items()}

#: Line styles for the variants of one method (batch sizes, sample fractions), in order.
VARIANT_STYLES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (1, 1)))


def method_color(method: str) -> str:
    return METHOD_COLORS.get(method, "#7f7f7f")


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def method_order(methods) -> list[str]:
    """Methods in the fixed display order, unknown ones last."""
    methods = list(dict.fromkeys(methods))
    return sorted(methods, key=lambda m: (METHODS.index(m) if m in METHODS else len(METHODS), m))
