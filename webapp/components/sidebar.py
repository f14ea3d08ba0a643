"""The sidebar: who is acting (every write is recorded under this member), and the team's members.

With accounts (docs/access.md) it names the logged-in member, offers Log out, and gives admins a
Members panel: add a member, change a role, set a password (the first login of a member created
before accounts existed), link an OIDC identity, end someone's logins. In single-user mode it keeps
the member picker (session state only, never the URL) and says that the dashboard has no login.
"""

from __future__ import annotations

import streamlit as st

from webapp import auth, resources, state
from webapp.components.notifications import render_member_hooks
from webapp.errors import guard

__all__ = ["render_sidebar", "SINGLE_USER_CAPTION"]

SINGLE_USER_CAPTION = (
    "Single-user mode: no login, so whoever opens this dashboard acts as the member picked here. It listens "
    "on this computer only; configure accounts to share it (docs/access.md)."
)
ROLES = ("admin", "member", "viewer")


def _k(name: str) -> str:
    return state.widget_key("sidebar", name)


def _add_member_form(first: bool, *, with_role: bool = False) -> None:
    from worker.services import members as svc

    with st.form(_k("add_member"), clear_on_submit=True, border=False):
        name = st.text_input("Name", key=_k("new_name"))
        email = st.text_input("Email (optional)", key=_k("new_email"))
        role = st.selectbox("Role", ROLES, index=1, key=_k("new_role")) if with_role else None
        if st.form_submit_button("Add member", type="primary" if first else "secondary"):
            with guard("Adding the member") as outcome:
                if first:  # the team is empty: its first member sets it up (and becomes admin)
                    member = resources.write(svc.create_member, with_actor=False, actor=None, name=name,
                                             email=email or None)
                else:
                    member = resources.write(svc.create_member, name=name, email=email or None, role=role)
            if not outcome.failed:
                if with_role:
                    state.flash(f"Added {member.name} ({member.role.value}); set a password or link an OIDC "
                                "identity below so that they can log in.")
                else:
                    state.set_actor_id(member.id)
                    state.flash(f"Added {member.name}; you are acting as {member.name}.")
                st.rerun()


def _single_user() -> None:
    members = resources.members()
    if not members:
        st.info("No team members yet. Add yourself to start: every action is recorded under a member.")
        _add_member_form(first=True)
        st.caption(SINGLE_USER_CAPTION)
        return
    ids = [m.id for m in members]
    names = {m.id: f"{m.name} ({m.role.value})" for m in members}
    current = state.actor_id()
    if current not in ids:
        current = ids[0]
        state.set_actor_id(current)
    chosen = st.selectbox(
        "Acting as", ids, index=ids.index(current), format_func=names.get, key=_k("actor"),
        help="Every change you make is recorded under this member.",
    )
    state.set_actor_id(chosen)
    st.caption(SINGLE_USER_CAPTION)
    with st.expander("Add a member"):
        _add_member_form(first=False)


def _member_settings(members: list) -> None:
    from worker.services import accounts, members as svc

    by_id = {m.id: m for m in members}
    member_id = st.selectbox("Member", list(by_id), key=_k("member"), format_func=lambda i: by_id[i].name)
    m = by_id[member_id]
    st.caption(f"Role {m.role.value}; password {'set' if m.has_password else 'not set'}; "
               f"OIDC {'linked' if m.oidc_linked else 'not linked'}.")
    role = st.selectbox("Role", ROLES, index=ROLES.index(m.role.value), key=_k(f"role_{m.id}"))
    if st.button("Set role", key=_k("set_role"), disabled=role == m.role.value):
        with guard(f"Changing {m.name}'s role") as outcome:
            resources.write(svc.set_member_role, member_id=m.id, role=role)
        if not outcome.failed:
            state.flash(f"{m.name} is now {role}.")
            st.rerun()
    with st.form(_k("password_form"), clear_on_submit=True, border=False):
        password = st.text_input("New password", type="password", key=_k("password"),
                                 help="Ends the member's current logins.")
        if st.form_submit_button("Set password"):
            with guard(f"Setting {m.name}'s password") as outcome:
                resources.write(accounts.set_password, member_id=m.id, password=password)
            if not outcome.failed:
                state.flash(f"{m.name}'s password is set; their earlier logins have ended.")
                st.rerun()
    with st.form(_k("oidc_form"), clear_on_submit=True, border=False):
        subject = st.text_input("OIDC subject (the provider's sub claim)", key=_k("subject"))
        if st.form_submit_button("Link OIDC identity"):
            with guard(f"Linking an OIDC identity to {m.name}") as outcome:
                resources.write(accounts.link_oidc, member_id=m.id, subject=subject)
            if not outcome.failed:
                state.flash(f"{m.name} now logs in through the organisation's provider as {subject.strip()}.")
                st.rerun()
    if st.button("End all their logins", key=_k("revoke")):
        with guard(f"Ending {m.name}'s logins") as outcome:
            n = resources.write(accounts.revoke_logins, member_id=m.id)
        if not outcome.failed:
            state.flash(f"Ended {n} login(s) of {m.name}.")
            st.rerun()


def _logged_in(member) -> None:
    st.text(f"Logged in as {member.name} ({member.role.value})")  # plain text: a name is never markup
    if st.button("Log out", key=_k("logout"), icon=":material/logout:"):
        auth.log_out()
    if member.role.value != "admin":
        return
    with st.expander("Members"):
        members = resources.members()
        st.dataframe(
            [{"name": x.name, "role": x.role.value, "password": x.has_password, "OIDC": x.oidc_linked}
             for x in members],
            hide_index=True, key=_k("members_table"),
        )
        _member_settings(members)
        st.markdown("**Add a member**")
        _add_member_form(first=False, with_role=True)


def render_sidebar() -> None:
    """Draw who is acting: the logged-in member (and the admins' Members panel), or the picker."""
    with st.sidebar:
        member = state.get(state.LOGIN)
        if member is not None:
            _logged_in(member)
        else:
            _single_user()
        render_member_hooks()
