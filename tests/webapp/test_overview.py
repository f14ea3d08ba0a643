"""Overview page and the router: empty database, seeded database, the sidebar's member picker."""

from __future__ import annotations


def test_empty_database_shows_helpful_empty_states(env, ui):
    at = ui.app().run()
    ui.no_exceptions(at)
    assert at.title[0].value == "Overview"
    infos = " ".join(i.value for i in at.info)
    assert "No team members yet" in infos
    assert "Nothing is running or queued" in infos
    assert "No dataset registered yet" in infos


def test_first_member_is_added_from_the_sidebar(env, ui):
    at = ui.app().run()
    at.sidebar.text_input[0].input("ada")
    at.sidebar.button[0].click()
    at.run()
    ui.no_exceptions(at)
    assert at.sidebar.selectbox[0].value is not None
    assert "ada" in at.sidebar.selectbox[0].format_func(at.sidebar.selectbox[0].value)


def test_seeded_overview_lists_running_queue_workers_and_best(seeded, ui):
    at = ui.app().run()
    ui.no_exceptions(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Running"] == "1"
    assert metrics["Succeeded"] == "4"
    tables = [t.value for t in at.dataframe]
    running = tables[0]
    assert list(running["run"]) == ["live"]
    assert running["device"].iloc[0] == "cuda:0"
    best = tables[1]
    assert best["name"].iloc[0].startswith("fpn+unet") or best["val"].iloc[0] == "0.8000"


def test_unmigrated_database_says_how_to_fix(env, ui, monkeypatch, tmp_path):
    from webapp import resources

    monkeypatch.setenv("SEGBOARD_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    resources.reset()
    at = ui.app().run()
    ui.no_exceptions(at)
    assert any("segboard db upgrade" in e.value for e in at.error)


def test_invalid_settings_say_which_variable(env, ui, monkeypatch):
    from webapp import resources

    monkeypatch.setenv("SEGBOARD_LEASE_S", "1")  # shorter than two heartbeats
    resources.reset()
    at = ui.app().run()
    ui.no_exceptions(at)
    assert any("lease_s" in e.value and "SEGBOARD_" in e.value for e in at.error)
