"""The SegBoard dashboard's script: a router over the page modules, and the sidebar.

The server is :mod:`webapp.app` (``streamlit run webapp/app.py``, which ``segboard up`` does): it
adds the login routes and turns unauthenticated page loads away. Every run of this script first
resolves who is logged in (:func:`webapp.auth.require_login`) and, with nobody, shows only a login
notice. Nothing here queries the database: each page does its own work through :mod:`webapp.resources`.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from webapp.auth import require_login
from webapp.components.sidebar import render_sidebar
from webapp.errors import guard

__all__ = ["PAGES", "main"]

_HERE = Path(__file__).resolve().parent

# (file under app_pages/, title, icon, url path); the first page is the default one.
PAGES: list[tuple[str, str, str, str]] = [
    ("overview.py", "Overview", ":material/dashboard:", "overview"),
    ("datasets.py", "Datasets", ":material/dataset:", "datasets"),
    ("new_experiment.py", "New experiment", ":material/science:", "new-experiment"),
    ("queue.py", "Queue", ":material/queue:", "queue"),
    ("leaderboard.py", "Leaderboard", ":material/leaderboard:", "leaderboard"),
    ("sweeps.py", "Sweeps", ":material/tune:", "sweeps"),
    ("run_detail.py", "Run detail", ":material/monitoring:", "run"),
    ("ensemble_builder.py", "Ensemble builder", ":material/join:", "ensemble-builder"),
    ("pseudo_labels.py", "Pseudo-label rounds", ":material/auto_awesome:", "pseudo-labels"),
    ("inspect.py", "Inspect", ":material/search_insights:", "inspect"),
    ("storage.py", "Storage", ":material/hard_drive:", "storage"),
]


def _pages() -> list[st.Page]:
    pages = []
    for i, (file, title, icon, url) in enumerate(PAGES):
        path = _HERE / "app_pages" / file
        if not path.is_file():  # a page another package ships later (Inspect) appears once it exists
            continue
        pages.append(st.Page(str(path), title=title, icon=icon, url_path=url, default=i == 0))
    return pages


def main() -> None:
    """Configure the page, resolve the login, draw the sidebar and run the selected page."""
    st.set_page_config(page_title="SegBoard", page_icon=":material/layers:", layout="wide")
    with guard("Checking your login") as outcome:
        require_login()  # stops the script after a login notice when nobody is logged in
    if outcome.failed:
        st.stop()
    page = st.navigation(_pages())
    with guard("The sidebar"):
        render_sidebar()
    with guard(page.title):
        page.run()


if __name__ == "__main__":
    main()
