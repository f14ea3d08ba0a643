"""Who acts in the dashboard: the login check of every script run, the single-user picker, and
writes refused without an acting member (the browser side is tests/e2e/test_access.py)."""

from __future__ import annotations


def test_with_accounts_a_session_without_a_login_sees_only_the_login_notice(seeded, ui, monkeypatch):
    from webapp import resources, state

    monkeypatch.setenv("SEGBOARD_AUTH", "local")
    resources.reset()
    at = ui.app()
    at.session_state[state.ACTOR] = seeded["ada"]  # a member left over from before must not act
    at.run()
    ui.no_exceptions(at)
    assert any("You are not logged in" in i.value for i in at.info)
    assert not at.sidebar.selectbox and not at.metric and not at.dataframe  # no picker, no page
    assert at.session_state[state.ACTOR] is None
    # the page URLs alone do not get past it either
    at = ui.app(run=seeded["fpn_run"], **{"as": seeded["ada"]})
    at.run()
    assert any("You are not logged in" in i.value for i in at.info) and not at.dataframe


def test_single_user_mode_keeps_the_picker_and_says_so(seeded, ui):
    from webapp.components.sidebar import SINGLE_USER_CAPTION

    at = ui.app().run()
    ui.no_exceptions(at)
    assert next(s for s in at.sidebar.selectbox if s.label == "Acting as").value == seeded["ada"]
    assert any(c.value == SINGLE_USER_CAPTION for c in at.sidebar.caption)
    assert not any("Logged in as" in t.value for t in at.sidebar.text)


def test_a_write_without_an_acting_member_is_refused(env):
    # outside a logged-in script run nobody acts: a write would otherwise run as the system
    import pytest

    from webapp import resources
    from worker.errors import PermissionDenied

    calls: list = []
    with pytest.raises(PermissionDenied, match="nobody is acting"):
        resources.write(lambda session, **kwargs: calls.append(kwargs), run_id=1)
    with pytest.raises(PermissionDenied, match="nobody is acting"):
        resources.submit_unit(lambda session, actor: calls.append(actor), queued=lambda _: resources.Queued())
    assert calls == []
