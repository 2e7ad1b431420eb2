"""Plotly dashboards built from the tracked runs: spec -> MLflow runs -> numbers -> figures
-> one self-contained HTML page.

Each panel is a module of two steps, as in Optuna's visualisation code: `_<panel>.py` has
`_get_<panel>_info(...)`, which computes the numbers (a NamedTuple, tested without a
browser), and `draw(info)`, which only draws; `panels.PANELS` is their registry.
"""

from classp.dashboards.page import build_dashboard
from classp.dashboards.spec import PANELS, DashboardSpec, load_dashboard_spec

__all__ = ["PANELS", "DashboardSpec", "build_dashboard", "load_dashboard_spec"]
