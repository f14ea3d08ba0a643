"""Logging in, in a real browser against one live ``segboard up`` with local accounts and OIDC.

One server (``auth = local+oidc``) serves every browser test here; members, a dataset and an
admin's running run are written through the services, so nothing trains. The OIDC provider is
``oidc-provider-mock`` in a thread on a free port, configured in ``.streamlit/secrets.toml`` of
the folder ``segboard up`` starts from, as docs/access.md describes. The last tests check the
single-user rules without a browser.
"""

from __future__ import annotations

import secrets
import time
import types
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

ADMIN, MEMBER, VIEWER = ("ada", "ada-password-1"), ("bob", "bob-password-1"), ("vic", "vic-password-1")
CLASSES = ["background", "class_1", "class_2", "class_3"]


@pytest.fixture(scope="module")
def provider() -> Any:
    """The OIDC provider: ``oidc-provider-mock`` on a free port (any client id is accepted)."""
    pytest.importorskip("oidc_provider_mock", reason="pip install -e '.[test]' installs oidc-provider-mock")
    from oidc_provider_mock import run_server_in_thread

    with run_server_in_thread(port=0) as server:
        yield f"http://localhost:{server.server_port}"


def _secrets(provider: str) -> str:
    # Streamlit fills in {port}; the browser uses 127.0.0.1, the origin the identity cookie is bound to
    return (
        "[auth]\n"
        'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"\n'
        f'cookie_secret = "{secrets.token_urlsafe(32)}"\n'
        'client_id = "segboard-e2e"\n'
        'client_secret = "segboard-e2e-secret"\n'
        f'server_metadata_url = "{provider}/.well-known/openid-configuration"\n'
    )


@pytest.fixture(scope="module")
def team(start_segboard, provider) -> Any:
    """The live server, three members with passwords (admin, member, viewer) and an admin's running run."""
    from segcore.data.synthetic import make_synthetic_coco
    from worker.db.session import session_scope
    from worker.services import accounts, datasets, experiments, lifecycle, members

    live = start_segboard(auth="local+oidc", secrets_toml=_secrets(provider))
    source = make_synthetic_coco(live.datasets / "tiny", num_images=8, num_classes=3, size=64, num_test_images=0)
    ids = {}
    with session_scope(live.factory) as s:
        for (name, password), role in ((ADMIN, "admin"), (MEMBER, "member"), (VIEWER, "viewer")):
            m = members.create_member(s, actor=ids.get("ada"), name=name, role=role)
            accounts.set_password(s, actor=None, member_id=m.id, password=password)
            ids[name] = m.id
        ids["dora"] = members.create_member(s, actor=ids["ada"], name="dora").id  # no password yet
        ds = datasets.register_dataset(s, actor=ids["ada"], name="tiny", source=source, classes=CLASSES,
                                       check_pixels=False)
        config = {
            "name": "admins-run",
            "data": {"source": source.model_dump(mode="json"), "classes": CLASSES,
                     "split": {"kind": "holdout", "val_fraction": 0.25, "seed": 0}},
            "model": {"arch": "Unet", "encoder": "resnet18", "encoder_weights": None},
            "training": {"epochs": 3, "batch_size": 4},
        }
        exp = experiments.create_experiment(s, actor=ids["ada"], config=config, dataset_id=ds.id)
        run_id = exp.run_ids[0]
        # claimed by a worker of another box in the same transaction, so the embedded worker never trains it
        assert lifecycle.claim_run(s, run_id=run_id, worker_name="box2/cuda:0", device="cuda:0", lease_s=3600)
    return types.SimpleNamespace(live=live, url=live.url, ids=ids, run_id=run_id)


def _login_page(page: Any, url: str) -> None:
    from playwright.sync_api import expect

    page.wait_for_url(f"{url}/segboard/login**")
    expect(page.get_by_role("heading", name="SegBoard")).to_be_visible()
    expect(page.get_by_label("Password")).to_be_visible()
    assert page.get_by_test_id("stApp").count() == 0  # nothing of the dashboard itself


def _log_in(browser: Any, team: Any, who: tuple[str, str], path: str = "/") -> tuple[Any, Any]:
    """A new browser context (its own cookies) logged in as ``who``; returns (context, page) at ``path``."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(team.url + path)
    _login_page(page, team.url)
    page.get_by_label("Name").fill(who[0])
    page.get_by_label("Password").fill(who[1])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda u: "/segboard/" not in u)
    if path != "/":  # back where the browser was going
        assert urllib.parse.urlsplit(page.url).path == urllib.parse.urlsplit(path).path
    expect(page.get_by_test_id("stSidebar").get_by_text(f"Logged in as {who[0]} (")).to_be_visible()
    return context, page


@pytest.mark.e2e
@pytest.mark.slow
def test_a_local_login_survives_a_reload_and_a_new_tab(team, chromium, tools):
    from playwright.sync_api import expect

    context = chromium.new_context()
    page = context.new_page()
    page.goto(f"{team.url}/leaderboard")
    _login_page(page, team.url)
    page.get_by_label("Name").fill(ADMIN[0])
    page.get_by_label("Password").fill("not-the-password")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Log in").click()
    assert answer.value.status == 401
    expect(page.get_by_role("alert")).to_have_text("wrong name or password")
    context.close()

    context, page = _log_in(chromium, team, ADMIN, "/leaderboard")
    try:
        (cookie,) = [c for c in context.cookies() if c["name"] == "segboard_session"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/"
        assert abs(cookie["expires"] - time.time() - 30 * 86400) < 3600  # session_max_days
        sidebar = page.get_by_test_id("stSidebar")
        expect(sidebar.get_by_text("Logged in as ada (admin)")).to_be_visible()
        expect(sidebar.get_by_role("button", name="Log out")).to_be_visible()
        expect(sidebar.get_by_text("Members")).to_be_visible()  # the admins' panel
        assert "as=" not in page.url
        tools.screenshot(page, "access_01_logged_in")
        page.reload()
        expect(sidebar.get_by_text("Logged in as ada (admin)")).to_be_visible()
        tab = context.new_page()
        tab.goto(f"{team.url}/queue")
        expect(tab.get_by_role("heading", name="Queue", exact=True)).to_be_visible()
        expect(tab.get_by_test_id("stSidebar").get_by_text("Logged in as ada (admin)")).to_be_visible()

        # the first login of a member created before accounts: an admin sets their password
        sidebar.get_by_text("Members").click()
        tools.idle(page)
        member = sidebar.get_by_role("combobox", name="Member")
        member.click()
        page.keyboard.type("dora")
        page.keyboard.press("Enter")
        tools.idle(page)
        expect(sidebar.get_by_text("password not set")).to_be_visible()
        sidebar.get_by_role("textbox", name="New password").fill("dora-password-1")
        sidebar.get_by_role("button", name="Set password").click()
        expect(page.get_by_text("dora's password is set")).to_be_visible()

        page.get_by_role("button", name="Log out").click()
        _login_page(page, team.url)
        tab.reload()  # the login ended for every tab
        _login_page(tab, team.url)
    except Exception:
        tools.screenshot(page, "access_failure_local")
        raise
    finally:
        context.close()
    context, page = _log_in(chromium, team, ("dora", "dora-password-1"))
    expect(page.get_by_test_id("stSidebar").get_by_text("Logged in as dora (member)")).to_be_visible()
    context.close()


@pytest.mark.e2e
@pytest.mark.slow
def test_an_oidc_login_creates_a_viewer(team, chromium, tools):
    from playwright.sync_api import expect

    from worker.db.session import session_scope
    from worker.services import members

    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(f"{team.url}/queue")
        _login_page(page, team.url)
        page.get_by_role("link", name="Log in with localhost").click()
        page.wait_for_url("**/oauth2/authorize**")  # the provider's own page
        page.locator("input[name=sub]").fill("carol@example.org")
        page.get_by_role("button", name="Authorize").click()
        page.wait_for_url(f"{team.url}/**")
        sidebar = page.get_by_test_id("stSidebar")
        expect(sidebar.get_by_text("Logged in as carol@example.org (viewer)")).to_be_visible()
        page.reload()
        expect(sidebar.get_by_text("Logged in as carol@example.org (viewer)")).to_be_visible()
        tools.screenshot(page, "access_02_oidc")
        with session_scope(team.live.factory) as s:
            carol = members.get_member_by_name(s, name="carol@example.org")
        assert carol.role.value == "viewer" and carol.oidc_linked and not carol.has_password
    except Exception:
        tools.screenshot(page, "access_failure_oidc")
        raise
    finally:
        context.close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.mark.e2e
@pytest.mark.slow
def test_an_unauthenticated_browser_sees_only_the_login_page(team, chromium):
    from webapp.streamlit_app import PAGES

    paths = ["/", *(f"/{url_path}" for *_, url_path in PAGES), f"/queue?run={team.run_id}"]
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        for path in paths:
            page.goto(team.url + path)
            _login_page(page, team.url)
            assert urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query).get("next", ["/"]) == [path]
    finally:
        context.close()
    # without a browser: every page is a redirect, a post to a page is refused, the health check answers
    opener = urllib.request.build_opener(_NoRedirect)
    for path in paths:
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(team.url + path, timeout=30)
        assert err.value.code == 303 and err.value.headers["Location"].startswith("/segboard/login")
    with pytest.raises(urllib.error.HTTPError) as err:
        opener.open(urllib.request.Request(f"{team.url}/queue", data=b"x=1", method="POST"), timeout=30)
    assert err.value.code == 401
    with opener.open(f"{team.url}/_stcore/health", timeout=30) as r:
        assert r.status == 200
    # a login form posted from another site is refused, even with the right password
    form = urllib.parse.urlencode({"name": ADMIN[0], "password": ADMIN[1], "next": "/"}).encode()
    with pytest.raises(urllib.error.HTTPError) as err:
        opener.open(urllib.request.Request(f"{team.url}/segboard/login", data=form, method="POST",
                                           headers={"Origin": "http://evil.example"}), timeout=30)
    assert err.value.code == 403 and "segboard_session" not in str(err.value.headers)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_viewer_cannot_cancel_an_admins_run(team, chromium, tools):
    from playwright.sync_api import expect

    # the link the outsider used: an admin's id in the URL no longer makes anyone act as the admin
    context, page = _log_in(chromium, team, VIEWER, f"/queue?as={team.ids['ada']}&run={team.run_id}")
    try:
        expect(page.get_by_role("heading", name="Queue", exact=True)).to_be_visible()
        tools.idle(page)
        page.get_by_role("button", name="Cancel", exact=True).click()
        error = page.get_by_test_id("stMain").get_by_test_id("stAlertContentError")
        expect(error).to_have_count(1)
        text = error.inner_text()
        line = text[text.index(f"Cancelling run {team.run_id} failed."):].strip()  # after the icon
        assert "viewer" in line.lower() and "\n" not in line, text
        tools.screenshot(page, "access_03_viewer_cancel")
    except Exception:
        tools.screenshot(page, "access_failure_cancel")
        raise
    finally:
        context.close()
    run = team.live.run(team.run_id)
    assert run.status.value == "running" and not run.cancel_requested


@pytest.mark.e2e
@pytest.mark.slow
def test_a_password_change_ends_existing_logins(team, chromium, tools):
    from playwright.sync_api import expect

    from worker.db.session import session_scope
    from worker.services import accounts

    context, page = _log_in(chromium, team, MEMBER)
    try:
        with session_scope(team.live.factory) as s:
            accounts.set_password(s, actor=team.ids["ada"], member_id=team.ids["bob"], password="bob-password-2")
        # the open page: its next script run finds no login and shows only the notice
        page.get_by_test_id("stSidebar").get_by_role("link", name="Leaderboard").click()
        expect(page.get_by_text("You are not logged in, or your login has ended")).to_be_visible()
        expect(page.get_by_role("heading", name="Leaderboard", exact=True)).to_have_count(0)
        page.reload()
        _login_page(page, team.url)
    except Exception:
        tools.screenshot(page, "access_failure_password")
        raise
    finally:
        context.close()
    context, page = _log_in(chromium, team, (MEMBER[0], "bob-password-2"))  # the new password works
    context.close()


# ---------------------------------------------------------------- single-user mode, without a browser


def test_single_user_mode_refuses_other_hosts_before_starting_anything(tmp_path):
    from worker.cli import build_parser
    from worker.queue.embedded import run_up
    from worker.settings import get_settings

    assert build_parser().parse_args(["up"]).host == "127.0.0.1"
    single = get_settings(home=tmp_path, auth="none")
    with pytest.raises(ValueError, match="SEGBOARD_AUTH") as err:
        run_up(single, host="0.0.0.0", say=lambda line: None)
    assert "0.0.0.0" in str(err.value)
    assert not (tmp_path / "embedded.json").exists()
    for host in ("127.0.0.1", "::1", "localhost"):
        single.check_web_host(host)
    for host in ("0.0.0.0", "", None, "192.168.1.20", "::"):
        with pytest.raises(ValueError, match="single-user"):
            single.check_web_host(host)
    get_settings(home=tmp_path, auth="local").check_web_host("0.0.0.0")


@pytest.mark.slow
def test_the_web_app_itself_refuses_every_interface_without_accounts(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGBOARD_")}
    env.update({"SEGBOARD_HOME": str(tmp_path), "SEGBOARD_AUTH": "none"})
    done = subprocess.run(
        [sys.executable, "-m", "streamlit", "run", str(root / "webapp" / "app.py"), "--server.address", "0.0.0.0",
         "--server.port", "0", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode != 0
    assert "SegBoard has no accounts" in done.stdout + done.stderr and "SEGBOARD_AUTH" in done.stderr


def test_only_paths_on_this_site_are_followed_after_login():
    from webapp.auth import login_url, safe_next

    for bad in (None, "", "https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)",
                "/segboard/logout", "/a\r\nSet-Cookie: x=1", "queue"):
        assert safe_next(bad) == "/", bad
    assert safe_next("/queue?run=3") == "/queue?run=3"
    assert login_url("/queue?run=3") == "/segboard/login?next=%2Fqueue%3Frun%3D3"
    assert login_url("https://evil.example/") == "/segboard/login"
