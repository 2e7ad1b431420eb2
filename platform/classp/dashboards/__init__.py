"""Plotly dashboards built from the tracked runs: spec -> MLflow runs -> numbers -> figures
-> one self-contained HTML page.

Each panel is two steps, as in Optuna's visualisation code: `<panel>_info(...)` computes
the numbers (a NamedTuple, tested without a browser), `draw_<panel>(info)` only draws.
"""

from classp.dashboards.page import build_dashboard
from classp.dashboards.spec import PANELS, DashboardSpec, load_dashboard_spec

__all__ = ["PANELS", "DashboardSpec", "build_dashboard", "load_dashboard_spec"]
