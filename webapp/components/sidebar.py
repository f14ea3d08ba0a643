"""The sidebar: who is acting (every write is recorded under this member), and adding a member."""

from __future__ import annotations

import streamlit as st

from webapp import resources, state
from webapp.errors import guard

__all__ = ["render_sidebar"]


def _add_member_form(first: bool) -> None:
    with st.form(state.widget_key("sidebar", "add_member"), clear_on_submit=True, border=False):
        name = st.text_input("Name", key=state.widget_key("sidebar", "new_name"))
        email = st.text_input("Email (optional)", key=state.widget_key("sidebar", "new_email"))
        if st.form_submit_button("Add member", type="primary" if first else "secondary"):
            from worker.services import members as svc

            with guard("Adding the member") as outcome:
                member = resources.write(svc.create_member, name=name, email=email or None)
            if not outcome.failed:
                state.set_actor_id(member.id)
                state.flash(f"Added {member.name}; you are acting as {member.name}.")
                st.rerun()


def render_sidebar() -> None:
    """Draw the acting-member picker (and the form to add one)."""
    with st.sidebar:
        members = resources.members()
        if not members:
            st.info("No team members yet. Add yourself to start: every action is recorded under a member.")
            _add_member_form(first=True)
            return
        ids = [m.id for m in members]
        names = {m.id: f"{m.name} ({m.role.value})" for m in members}
        current = state.actor_id()
        if current not in ids:
            current = ids[0]
            state.set_actor_id(current)
        chosen = st.selectbox(
            "Acting as", ids, index=ids.index(current), format_func=names.get,
            key=state.widget_key("sidebar", "actor"), help="Every change you make is recorded under this member.",
        )
        state.set_actor_id(chosen)
        if st.query_params.get("as") != str(chosen):  # a reload or a copied URL keeps the member
            st.query_params["as"] = str(chosen)
        with st.expander("Add a member"):
            _add_member_form(first=False)
