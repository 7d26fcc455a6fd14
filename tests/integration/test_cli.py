"""The `fluxbox` command as a user runs it: exit codes, messages, the control socket."""

from __future__ import annotations

import json
import subprocess
import sys

import appliance
from tests.integration.conftest import dest


def fluxbox(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True,
                          text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)


def test_check_config_accepts_a_good_file_and_names_line_and_key_of_a_bad_one(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[[site]]\nid = "a"\n[[site.destination]]\nname = "pacs"\n'
                    'ae_title = "PACS"\nhost = "10.0.0.1"\nport = 104\n')
    done = fluxbox("check-config", str(good))
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout

    bad = tmp_path / "bad.toml"
    bad.write_text('[box]\nprot = 104\n\n[[site]]\nid = "a"\n[[site.destination]]\n'
                   'name = "pacs"\nae_title = "PACS"\nhost = "10.0.0.1"\nport = "abc"\n')
    done = fluxbox("check-config", str(bad))
    assert done.returncode == 2
    assert "bad.toml:2:" in done.stderr and "prot" in done.stderr and "port" in done.stderr
    assert "bad.toml:10:" in done.stderr and "site[0].destination[0].port" in done.stderr


def test_bad_usage_exits_2_and_a_stopped_box_exits_1(tmp_path):
    assert fluxbox("no-such-command").returncode == 2
    assert fluxbox("site", "set").returncode == 2
    config = tmp_path / "f.toml"
    config.write_text(f'[box]\ndata_dir = "{tmp_path / "data"}"\n[[site]]\nid = "a"\n'
                      '[[site.destination]]\nname = "p"\nae_title = "P"\nhost = "h"\nport = 1\n')
    done = fluxbox("status", "--config", str(config))
    assert done.returncode == 1
    assert "not running" in done.stderr


def test_commands_talk_to_the_running_box_with_config_before_or_after(make_box, ct_study):
    two_sites = (
        '[[site]]\nid = "a"\n[[site.destination]]\nname = "pacs"\nae_title = "A"\n'
        'host = "127.0.0.1"\nport = 9\n\n'
        '[[site]]\nid = "b"\n[[site.destination]]\nname = "pacs"\nae_title = "B"\n'
        'host = "127.0.0.1"\nport = 9\n'
    )
    box = make_box([dest("pacs", "PACS", 9)], sites=two_sites).start()
    config = str(box.config_path)

    # a reader that is gone before the answer comes (`| true`, like `| head` on a long
    # list) gets no traceback
    reader = subprocess.run(
        f"{sys.executable} -m appliance studies --config {config} | true",
        shell=True, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in reader.stderr, reader.stderr

    status = json.loads(fluxbox("status", "--json", "--config", config).stdout)
    assert status["site"] == {"id": "a", "source": "fixed"}
    for key in ("link", "queue", "disk", "health", "errors"):
        assert key in status
    assert status["link"]["class"] == "wired"
    assert status["version"]["appliance"] == appliance.__version__
    assert "version: " + appliance.__version__ in fluxbox("status", "--config", config).stdout

    done = fluxbox("--config", config, "site", "set", "b")
    assert done.returncode == 0 and "b (manual)" in done.stdout
    assert box.status()["site"] == {"id": "b", "source": "manual"}
    done = fluxbox("site", "set", "nowhere", "--config", config)
    assert done.returncode == 1 and "unknown site" in done.stderr
    assert fluxbox("site", "auto", "--config", config).returncode == 0
    assert box.status()["site"] == {"id": "a", "source": "fixed"}

    text = fluxbox("studies", "--config", config)
    assert text.returncode == 0 and "no studies" in text.stdout
    assert json.loads(fluxbox("studies", "--json", "--config", config).stdout) == []
    assert fluxbox("retry", "--config", config).returncode == 0


def test_demo_delivers_through_a_flaky_link():
    done = fluxbox("demo", "--instances", "8", "--cuts", "2", timeout_s=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "delivered to the PACS          : 8" in done.stdout
    assert "link cuts during delivery      : 2" in done.stdout
