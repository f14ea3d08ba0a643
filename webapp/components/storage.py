"""Storage widgets shared by pages: an object's disk use with its pin button, and a delete with its confirmation."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from webapp import resources, state
from webapp.errors import guard
from worker.services import deletion, disk, retention

__all__ = ["render_disk_line", "render_delete"]


def render_disk_line(kind: str, object_id: int, *, page: str) -> None:
    """One line with what a run, group or experiment holds on the artifact root, and a pin/unpin button."""
    with guard("Reading the disk use") as outcome:
        info = resources.read(disk.storage_of, kind=kind, object_id=object_id, artifacts=resources.artifacts())
    if outcome.failed:
        return
    left, right = st.columns([4, 1])
    left.caption(f"Disk use: {disk.format_bytes(info.bytes)} in {info.files} file{'s' if info.files != 1 else ''}"
                 + (" · pinned: no retention policy touches it" if info.pinned else ""))
    label = f"Unpin this {kind}" if info.pinned else f"Pin this {kind}"
    if right.button(label, key=state.widget_key(page, f"pin.{kind}.{object_id}"),
                    help="A pinned object's files are never removed by `segboard gc` (only its owner or an admin)"):
        with guard("Changing the pin") as changed:
            resources.write(retention.set_pinned, kind=kind, object_id=object_id, pinned=not info.pinned)
        if not changed.failed:
            state.flash(f"{kind.capitalize()} {object_id} {'unpinned' if info.pinned else 'pinned'}.")
            st.rerun()


def render_delete(kind: str, object_id: int, *, page: str) -> None:
    """What deleting ``kind object_id`` removes and who uses it; a Delete button behind a confirmation."""
    k = lambda name: state.widget_key(page, f"delete.{name}")  # noqa: E731
    cascade = st.checkbox("Also delete what uses it (ensembles, pseudo-label rounds, submissions)", key=k("cascade"))
    with guard("Working out what the delete removes") as outcome:
        plan = resources.read(deletion.plan_delete, kind=kind, object_id=object_id, cascade=cascade,
                              artifacts=resources.artifacts())
    if outcome.failed:
        return
    st.markdown(f"Deleting {kind} {object_id} **{plan.name}** removes {len(plan.objects)} object(s) and "
                f"**{disk.format_bytes(plan.bytes)}** from the artifact root:")
    st.dataframe(pd.DataFrame([{"kind": o.kind, "id": o.id, "name": o.name, "why": o.why, "pinned": o.pinned,
                                "MiB": o.bytes / 2**20} for o in plan.objects]),
                 hide_index=True, width="stretch", key=k("objects"),
                 column_config={"MiB": st.column_config.NumberColumn(format="%.1f")})
    if plan.dependants and not cascade:
        st.warning("In use by: " + "; ".join(f"{d.kind} {d.id} {d.name!r} ({d.why} {d.uses})"
                                             for d in plan.dependants)
                   + ". Delete those first, or tick the box above to delete them too.")
    for blocker in plan.blockers:
        st.error(f"Cannot delete now: {blocker}.")
    sure = st.checkbox("I understand: these rows and files are removed for good", key=k("sure"),
                       disabled=not plan.allowed)
    if st.button(f"Delete {kind} {object_id}", type="primary", key=k("go"), disabled=not (plan.allowed and sure)):
        with guard(f"Deleting {kind} {object_id}") as done:
            result = resources.write(deletion.delete, kind=kind, object_id=object_id, cascade=cascade,
                                     artifacts=resources.artifacts())
        if not done.failed:
            state.flash(f"Deleted {len(result.objects)} object(s); freed {disk.format_bytes(result.bytes)}.")
            st.rerun()
