"""Links between pages (one click from a row to its detail, to Inspect, or into the ensemble builder).

Targets are page files relative to ``streamlit_app.py``; the selected object travels in the query
string (``?run=3``, ``?ensemble=2``, ``?group=5``), so a link can be bookmarked or shared. Links carry
page state only, never who acts: a new tab is logged in by the login cookie (webapp.auth).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import streamlit as st

__all__ = [
    "RUN_DETAIL",
    "INSPECT",
    "ENSEMBLE_BUILDER",
    "LEADERBOARD",
    "NEW_EXPERIMENT",
    "DATASETS",
    "QUEUE",
    "PSEUDO_LABELS",
    "inspect_available",
    "link_run",
    "link_inspect",
    "page_url",
]

RUN_DETAIL = "app_pages/run_detail.py"
INSPECT = "app_pages/inspect.py"
ENSEMBLE_BUILDER = "app_pages/ensemble_builder.py"
LEADERBOARD = "app_pages/leaderboard.py"
NEW_EXPERIMENT = "app_pages/new_experiment.py"
DATASETS = "app_pages/datasets.py"
QUEUE = "app_pages/queue.py"
PSEUDO_LABELS = "app_pages/pseudo_labels.py"

_ROOT = Path(__file__).resolve().parents[1]


def page_url(url_path: str, **params: object) -> str:
    """A relative URL to a page (``run``, ``inspect``, ...) with ``params``.

    Example:
        >>> page_url("run", run=3)
        './run?run=3'
    """
    query = {k: str(v) for k, v in params.items() if v is not None}
    return f"./{url_path}?{urlencode(query)}" if query else f"./{url_path}"


def inspect_available() -> bool:
    """Whether the Inspect page is installed (the router registers it only then)."""
    return (_ROOT / INSPECT).is_file()


def link_run(run_id: int, label: str | None = None) -> None:
    """A link to a run's detail page."""
    st.page_link(RUN_DETAIL, label=label or f"Run {run_id}", icon=":material/monitoring:",
                 query_params={"run": str(run_id)})


def link_inspect(
    *, run: int | None = None, ensemble: int | None = None, group: int | None = None, label: str = "Inspect errors"
) -> None:
    """A link to the Inspect page for a run, an ensemble or a group (nothing when Inspect is not installed)."""
    if not inspect_available():
        return
    if run is not None:
        params = {"run": str(run)}
    elif group is not None:
        params = {"group": str(group)}
    else:
        params = {"ensemble": str(ensemble)}
    st.page_link(INSPECT, label=label, icon=":material/search_insights:", query_params=params)
