"""The one place the panels import plotly from (as Optuna's visualization/_plotly_imports):
loaded when a dashboard is drawn, never by the commands that only train."""

import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["go", "make_subplots"]
