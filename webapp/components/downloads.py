"""The one file picker of the dashboard: small files read here, stores, checkpoints and submission files
streamed by the HTTP API (``/api``, with the browser's login), for runs, groups and ensembles alike.

Files up to :data:`MAX_DOWNLOAD_BYTES` under an object's folder come through ``st.download_button``; a
checkpoint or a probability store (often hundreds of MB) is a link to a zip the API streams a chunk at a
time, fetched through the artifact root whether it is local or an object store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import streamlit as st

from webapp import resources
from webapp.errors import guard

__all__ = ["MAX_DOWNLOAD_BYTES", "api_url", "artifact_files", "file_picker"]

MAX_DOWNLOAD_BYTES = 200 * 1024 * 1024


def api_url(path: str) -> str:
    """A link to the HTTP API on this server (relative, so it works behind any host name or proxy)."""
    return "/api/" + path.lstrip("/")


def artifact_files(folder: str | None, *, limit: int = 200) -> list[tuple[str, int, str]]:
    """Files under an artifact folder as ``(relative path, bytes, location)``, sorted.

    The folder may be local or in a remote artifact root (listed there, nothing is downloaded).
    Returns an empty list for None or a missing folder.
    """
    if not folder:
        return []
    base = str(folder).rstrip("/")
    return [(rel, size, f"{base}/{rel}") for rel, size in resources.artifacts().files(folder)[:limit]]


def file_picker(files: Sequence[tuple[str, int, str]], streamed: Mapping[str, str], *, key: str) -> None:
    """One picker over an object's downloads.

    Args:
        files: ``(relative path, bytes, location)`` of the small files (:func:`artifact_files`).
        streamed: Label -> API path of what the API streams (``"checkpoint (zip)"`` -> ``runs/3/checkpoint``).
        key: The picker's widget key.
    """
    options = [*streamed, *(rel for rel, _, _ in files)]
    if not options:
        st.caption("No files to download here yet.")
        return
    sizes = {rel: (size, location) for rel, size, location in files}

    def label(option: str) -> str:
        return option if option in streamed else f"{option} ({sizes[option][0] / 1024:.1f} KiB)"

    picked = st.selectbox("Download", options, key=key, format_func=label)
    if picked in streamed:
        st.link_button(f"Download {picked}", api_url(streamed[picked]), icon=":material/download:")
        return
    size, location = sizes[picked]
    if size > MAX_DOWNLOAD_BYTES:
        st.info(f"{picked} is {size / 2**20:.0f} MiB; copy it from {location}.")
        return
    with guard(f"Reading {picked}") as outcome:
        data = resources.artifacts().fetch(location).read_bytes()
    if not outcome.failed:
        st.download_button(f"Download {Path(picked).name}", data=data, file_name=Path(picked).name,
                           key=f"{key}.button")
