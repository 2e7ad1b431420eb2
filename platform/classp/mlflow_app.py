"""The MLflow server app that `classp ui` and the compose stack run: MLflow's own, except
that its page opens in the model-training view.

MLflow 3.17 shows every experiment in one of two workspaces, "GenAI" (traces, judges,
evaluation runs) or "Model training" (the runs list, metrics, artifacts), and the choice is
the browser's, not the experiment's: the `mlflow.experimentKind` tag is ignored, a
`?workflowType=` in the URL lasts only until the next link, and what persists is the
localStorage key below, which defaults to GenAI. A study's runs are model training, so the
page served here sets that key to the model-training view when the browser has none yet;
a user who switches to GenAI keeps that choice.

Run with `mlflow server --app-name classp` (the entry point in pyproject.toml).
"""

from __future__ import annotations

import json
import os

from flask import Response
from mlflow.server import app as flask_app
from mlflow.server.fastapi_app import app  # noqa: F401  (what uvicorn serves)

WORKFLOW_KEY = "mlflow.workflowType_v1"  # MLflow's useLocalStorage key, version 1
MODEL_TRAINING = "machine_learning"
_KEY, _VALUE = json.dumps(WORKFLOW_KEY), json.dumps(json.dumps(MODEL_TRAINING))
DEFAULT_VIEW_SCRIPT = (f"<script>try{{if(localStorage.getItem({_KEY})===null)"
                       f"localStorage.setItem({_KEY},{_VALUE})}}catch(e){{}}</script>")


def page_opening_in_model_training(html: str) -> str:
    """MLflow's index.html with the default-view script run before MLflow's own scripts
    (they are deferred; this one runs as the head is read)."""
    if "</head>" not in html:
        return html
    return html.replace("</head>", DEFAULT_VIEW_SCRIPT + "</head>", 1)


_mlflow_serve = flask_app.view_functions["serve"]


def _serve_index():
    index = os.path.join(flask_app.static_folder, "index.html")
    if not os.path.exists(index):
        return _mlflow_serve()  # MLflow's own message for a build without its UI
    with open(index, encoding="utf-8") as page:
        html = page_opening_in_model_training(page.read())
    return Response(html, mimetype="text/html")


flask_app.view_functions["serve"] = _serve_index
