"""Notification hooks in the dashboard: a member's own in the sidebar, an experiment's on run detail."""

from __future__ import annotations

SECRET = "T0/B0/sidebarSecret99"


def _all_text(at) -> str:
    parts = [e.value for kind in ("text", "markdown", "caption", "success", "error", "info") for e in at.get(kind)]
    parts += [e.value for e in at.sidebar.get("text")] + [e.value for e in at.sidebar.get("markdown")]
    return "\n".join(str(p) for p in parts)


def test_a_member_adds_a_hook_in_the_sidebar_and_sees_only_its_host(seeded, ui):
    at = ui.open_page("run_detail", actor=seeded["ada"], run=seeded["fpn_run"])
    ui.no_exceptions(at)
    next(t for t in at.sidebar.text_input if t.label == "Webhook URL").input(f"https://hooks.example.org/{SECRET}")
    next(b for b in at.sidebar.button if b.label == "Add hook").click().run()
    ui.no_exceptions(at)
    text = _all_text(at)
    assert "https://hooks.example.org/•••" in text
    assert SECRET not in text
    from worker.services import notifications

    with ui.scope() as s:
        (hook,) = notifications.list_hooks(s, actor=seeded["ada"])
    assert hook.member_id == seeded["ada"] and hook.payload_format.value == "slack"


def test_only_the_experiments_owner_or_an_admin_adds_a_hook_to_it(seeded, ui):
    # the fold runs' experiment is ada's (the team's first member, an admin); bob is a member
    run_id = seeded["fold_runs"][0]
    at = ui.open_page("run_detail", actor=seeded["bob"], run=run_id)
    next(t for t in at.main.text_input if t.label == "Webhook URL").input("https://discord.com/api/webhooks/1/x")
    next(b for b in at.main.button if b.label == "Add hook").click().run()
    ui.no_exceptions(at)
    assert any("it is ada's" in e.value for e in at.error)
    at = ui.open_page("run_detail", actor=seeded["bob"], run=seeded["fpn_run"])  # bob's own experiment
    next(t for t in at.main.text_input if t.label == "Webhook URL").input("https://discord.com/api/webhooks/1/x")
    next(b for b in at.main.button if b.label == "Add hook").click().run()
    ui.no_exceptions(at)
    assert not at.error
    from worker.services import notifications

    with ui.scope() as s:
        (hook,) = notifications.list_hooks(s, actor=None)
    assert hook.experiment_id is not None and hook.member_id is None and hook.created_by == seeded["bob"]
