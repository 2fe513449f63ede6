"""One colour and one label per method, used by every figure and table."""

from __future__ import annotations

METHODS = ("slide", "tf-full-cpu", "tf-sampled-cpu", "tf-full-gpu", "tf-sampled-gpu",
           "torch-full-cpu", "torch-sampled-cpu", "torch-full-gpu", "torch-sampled-gpu")

METHOD_COLORS = {
    "slide": "#d62728",          # red, as SLIDE in the paper's figures
    "tf-full-cpu": "#1f77b4",    # blue
    "tf-sampled-cpu": "#17becf",  # cyan
    "tf-full-gpu": "#2ca02c",    # green
    "tf-sampled-gpu": "#9467bd",  # purple
    "torch-full-cpu": "#ff7f0e",    # orange
    "torch-sampled-cpu": "#bcbd22",  # olive
    "torch-full-gpu": "#8c564b",    # brown
    "torch-sampled-gpu": "#e377c2",  # pink
}

METHOD_LABELS = {
    "slide": "SLIDE (CPU)",
    "tf-full-cpu": "TF full softmax (CPU)",
    "tf-sampled-cpu": "TF sampled softmax (CPU)",
    "tf-full-gpu": "TF full softmax (GPU)",
    "tf-sampled-gpu": "TF sampled softmax (GPU)",
    "torch-full-cpu": "PyTorch full softmax (CPU)",
    "torch-sampled-cpu": "PyTorch sampled softmax (CPU)",
    "torch-full-gpu": "PyTorch full softmax (GPU)",
    "torch-sampled-gpu": "PyTorch sampled softmax (GPU)",
}

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
