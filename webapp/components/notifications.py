"""Notification hooks in the dashboard: a member's own (the sidebar) and an experiment's (run detail).

A hook is a Slack or Discord webhook told when a run, group, sweep, ensemble, pseudo-label round or
submission succeeds or fails (docs/notifications.md). The URL is typed once into a password field
and never shown again: lists show its host and a masked path. Who may add, pause, test or remove a
hook is decided by the service layer (the owner, or an admin); a refusal is shown as an error.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from webapp import resources, state
from webapp.errors import guard

__all__ = ["render_member_hooks", "render_experiment_hooks"]

FORMATS = ("slack", "discord")


def _k(scope: str, name: str) -> str:
    return state.widget_key("notifications", f"{scope}_{name}")


def _send_test(hook_id: int) -> None:
    """Queue a test message and send it now (a few seconds at most); say what the endpoint answered."""
    from worker.services import notifications as svc

    with guard("Sending a test message") as outcome:
        delivery = resources.write(svc.queue_test, hook_id=hook_id)
        svc.send_pending(resources.session_factory(), settings=resources.app_settings(),
                         delivery_ids=[delivery.id])
        after = resources.read(svc.list_deliveries, actor=resources.acting_member(), hook_id=hook_id, limit=20)
    if outcome.failed:
        return
    row = next((d for d in after if d.id == delivery.id), None)
    if row is not None and row.status.value == "sent":
        state.flash(f"Test message delivered to hook {hook_id}.")
    else:
        state.flash(f"The test message to hook {hook_id} was not accepted: "
                    f"{row.last_error if row is not None else 'the hook was removed'}", "error")
    st.rerun()


def _hook_rows(hooks: list[Any], scope: str) -> None:
    from worker.services import notifications as svc

    for h in hooks:
        c = st.columns([5, 1, 1, 1])
        label = f"**{h.id}** {h.payload_format.value} · {', '.join(h.events)}" + ("" if h.enabled else " · paused")
        c[0].markdown(label)
        c[0].text(h.url_display + (f" · {h.name}" if h.name else ""))  # plain text, never markup
        if c[1].button("Test", key=_k(scope, f"test_{h.id}"), disabled=not h.enabled):
            _send_test(h.id)
        if c[2].button("Resume" if not h.enabled else "Pause", key=_k(scope, f"toggle_{h.id}")):
            with guard("Changing the hook") as outcome:
                resources.write(svc.set_hook_enabled, hook_id=h.id, enabled=not h.enabled)
            if not outcome.failed:
                st.rerun()
        if c[3].button("Remove", key=_k(scope, f"remove_{h.id}")):
            with guard("Removing the hook") as outcome:
                resources.write(svc.remove_hook, hook_id=h.id)
            if not outcome.failed:
                state.flash(f"Removed notification hook {h.id}.")
                st.rerun()


def _add_form(scope: str, **where: Any) -> None:
    from worker.services import notifications as svc

    with st.form(_k(scope, "add"), clear_on_submit=True, border=False):
        url = st.text_input("Webhook URL", type="password", key=_k(scope, "url"),
                            help="From the channel's settings in Slack (Incoming Webhooks) or Discord (Integrations). "
                                 "It is a secret: only its host is shown after saving.")
        c = st.columns(2)
        fmt = c[0].selectbox("Format", FORMATS, key=_k(scope, "format"))
        events = c[1].multiselect("When", list(svc.EVENTS), default=list(svc.EVENTS), key=_k(scope, "events"))
        name = st.text_input("Label (optional)", key=_k(scope, "name"))
        if st.form_submit_button("Add hook"):
            with guard("Adding the hook") as outcome:
                hook = resources.write(svc.add_hook, url=url, payload_format=fmt, events=events, name=name, **where)
            if not outcome.failed:
                state.flash(f"Added notification hook {hook.id} to {hook.url_display}; send it a test.")
                st.rerun()


def render_member_hooks() -> None:
    """The acting member's own hooks (all of their runs, groups, sweeps, ensembles, rounds, submissions)."""
    from worker.services import notifications as svc

    actor = state.actor_id()
    if actor is None:
        return
    with st.expander("My notifications"):
        with guard("Loading your notification hooks"):
            hooks = resources.read(svc.list_hooks, actor=actor, member_id=actor)
            if not hooks:
                st.caption("No hooks yet: add a Slack or Discord webhook to hear when your work ends.")
            _hook_rows(hooks, "member")
        _add_form("member")


def render_experiment_hooks(experiment_id: int) -> None:
    """Hooks of one experiment (its runs and groups), for its owner and admins to manage."""
    from worker.services import notifications as svc

    actor = state.actor_id()
    if actor is None:
        return
    with st.expander(f"Notifications for experiment {experiment_id}"):
        with guard("Loading the experiment's notification hooks"):
            hooks = resources.read(svc.list_hooks, actor=actor, experiment_id=experiment_id)
            _hook_rows(hooks, f"exp{experiment_id}")
        st.caption("Its owner and admins may add hooks here; they hear of this experiment's runs and groups.")
        _add_form(f"exp{experiment_id}", experiment_id=experiment_id)
