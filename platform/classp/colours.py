"""The one colour palette of every figure (dashboards and the sparsity PNG): the "tab10"
colours, red second so that the first two methods compared (CLASSP, EWC) contrast."""

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def colour(i: int) -> str:
    """The i-th colour, repeating after ten."""
    return PALETTE[i % len(PALETTE)]
