"""The front-panel console in a real terminal (tmux): what it shows, what its keys do."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import dest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")

TWO_SITES = (
    '[[site]]\nid = "a"\n[[site.destination]]\nname = "pacs"\nae_title = "A"\n'
    'host = "127.0.0.1"\nport = 9\n\n'
    '[[site]]\nid = "b"\n[[site.destination]]\nname = "pacs"\nae_title = "B"\n'
    'host = "127.0.0.1"\nport = 9\n'
)


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=10,
                          check=True).stdout


def _alive(session: str) -> bool:
    return subprocess.run(["tmux", "has-session", "-t", session], capture_output=True,
                          timeout=10).returncode == 0


def screen(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session)


def wait_screen(session: str, text: str, timeout_s: float = 15) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        shown = screen(session)
        if text in shown:
            return shown
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not on screen:\n{screen(session)}")


def test_console_shows_the_box_and_its_keys_pin_and_release_a_site(make_box, tmp_path):
    box = make_box([dest("pacs", "PACS", 9)], sites=TWO_SITES).start()
    session = f"fluxbox-console-{box.port}"
    command = f"{sys.executable} -m appliance console --config {box.config_path}"
    tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "40", command)
    try:
        shown = wait_screen(session, "SITE    a (fixed)")
        assert "\u2588" in shown, "the health state in large text"
        assert "LINK    wired" in shown and "QUEUE   0 studies" in shown

        tmux("send-keys", "-t", session, "p")
        wait_screen(session, "pin which site?")
        tmux("send-keys", "-t", session, "2")
        wait_screen(session, "site pinned: b")
        assert box.status()["site"] == {"id": "b", "source": "manual"}
        wait_screen(session, "SITE    b (manual)")

        tmux("send-keys", "-t", session, "a")
        wait_screen(session, "SITE    a (fixed)")
        tmux("send-keys", "-t", session, "q")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(session):
            time.sleep(0.2)
        assert not _alive(session), "q quits the console"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True,
                       timeout=10)
    assert box.status()["site"]["id"] == "a"
