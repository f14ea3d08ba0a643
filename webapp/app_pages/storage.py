"""Storage: what the artifacts cost per experiment, dataset, group or run (sortable, with the total),
deleting a run, group or experiment with its files behind a confirmation, and the retention policy's
dry run with the button that applies it (admins)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from webapp import resources, state
from webapp.components import links
from webapp.components.layout import page_header
from webapp.components.storage import render_delete
from webapp.errors import guard
from worker.services import disk, retention

__all__ = ["render", "usage_frame"]

PAGE = "storage"
_PAGES = {"run": ("run", "run"), "group": ("run", "group")}


def _k(name: str) -> str:
    return state.widget_key(PAGE, name)


def usage_frame(report) -> pd.DataFrame:
    """The report's rows as a table: name, what, size in MiB (a number, so it sorts), files, pinned, a link."""
    rows = []
    for r in report.rows:
        target = _PAGES.get(r.kind)
        link = links.page_url(target[0], **{target[1]: r.id}) if target and r.id is not None else None
        rows.append({"name": r.name, "kind": r.kind, "id": r.id, "detail": r.detail, "MiB": r.bytes / 2**20,
                     "files": r.files, "pinned": bool(r.pinned), "open": link})
    return pd.DataFrame(rows, columns=["name", "kind", "id", "detail", "MiB", "files", "pinned", "open"])


def _usage() -> None:
    by = st.segmented_control("Disk use by", list(disk.BY), default="experiment", key=_k("by")) or "experiment"
    with guard("Measuring the disk use") as outcome:
        report = resources.read(disk.disk_use, by=by, artifacts=resources.artifacts())
    if outcome.failed:
        return
    c = st.columns(3)
    c[0].metric("Total", disk.format_bytes(report.total_bytes))
    c[1].metric("Files", report.total_files)
    c[2].metric(f"{by.capitalize()}s", sum(1 for r in report.rows if r.kind == by))
    st.caption(f"Artifact root: {report.root}. Click a column header to sort.")
    st.dataframe(usage_frame(report), hide_index=True, width="stretch", key=_k("usage"),
                 column_config={"MiB": st.column_config.NumberColumn("size (MiB)", format="%.1f"),
                                "open": st.column_config.LinkColumn(display_text="open")})


def _delete() -> None:
    c = st.columns([1, 1, 3])
    kind = c[0].selectbox("Delete a", ["run", "group", "experiment"], key=_k("kind"))
    object_id = c[1].number_input("Id", min_value=1, step=1, value=None, key=_k("id"))
    if object_id is None:
        c[2].caption("Pick what to delete: the page lists what goes and what uses it, and asks before removing "
                     "anything.")
        return
    render_delete(kind, int(object_id), page=PAGE)


def _gc() -> None:
    policy = retention.RetentionPolicy.from_settings(resources.app_settings())
    days = "kept" if policy.test_store_days is None else f"removed after {policy.test_store_days} days"
    st.caption(f"Policy (settings retention_*): last checkpoints of succeeded runs "
               f"{'removed' if policy.drop_last_checkpoint else 'kept'}; test stores {days}. Pinned runs, groups and "
               "experiments, best checkpoints and anything in use stay.")
    with guard("Working out what the policy removes") as outcome:
        plan = resources.read(retention.plan_gc, artifacts=resources.artifacts(), policy=policy)
    if outcome.failed:
        return
    if not plan.items:
        st.info("The policy removes nothing now.")
    else:
        st.dataframe(pd.DataFrame([{"kind": i.kind, "id": i.id, "what": i.what.replace("_", " "),
                                    "MiB": i.bytes / 2**20, "why": i.reason} for i in plan.items]),
                     hide_index=True, width="stretch", key=_k("gc_items"),
                     column_config={"MiB": st.column_config.NumberColumn(format="%.1f")})
    if plan.kept:
        with st.expander(f"Kept although the policy covers them ({len(plan.kept)})"):
            st.markdown("\n".join(f"- {line}" for line in plan.kept))
    if st.button(f"Free {disk.format_bytes(plan.bytes)} now", key=_k("gc_go"), disabled=not plan.items,
                 help="Admins only; the same as `segboard gc`"):
        with guard("Applying the retention policy") as done:
            result = resources.write(retention.run_gc, artifacts=resources.artifacts(), policy=policy)
        if not done.failed:
            state.flash(f"Freed {disk.format_bytes(result.bytes)} in {len(result.items)} item(s).")
            st.rerun()


def render() -> None:
    """Draw the page."""
    page_header("Storage", "What the checkpoints and probability stores cost, and freeing it.")
    tabs = st.tabs(["Disk use", "Delete", "Retention"], key=_k("tabs"), on_change="rerun")
    with tabs[0]:
        _usage()
    with tabs[1]:
        _delete()
    with tabs[2]:
        _gc()


if __name__ == "__main__":
    render()
