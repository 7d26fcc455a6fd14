"""Config of a box closed to strangers (issue 12, item 7): `box.listen`,
`box.unknown_callers`, `box.metrics_listen` with an interface, and the firewall rules
`fluxbox firewall` makes from them."""

from __future__ import annotations

import pytest

from appliance.config import ConfigError, default_config, parse_config
from appliance.firewall import ruleset

SITE = """
[[site]]
id = "a"

[[site.destination]]
name = "pacs"
ae_title = "PACS"
host = "10.20.1.5"
port = 104
"""


def _box(lines: str) -> str:
    return f"[box]\n{lines}\n{SITE}"


def test_the_embedded_default_listens_everywhere_and_accepts_any_caller():
    box = default_config().box
    assert box.listen == ()
    assert box.allowed_calling_aets == () and not box.refuses_unknown  # PRODUCT.md


@pytest.mark.parametrize(("lines", "refuses"), [
    ("", False),
    ('allowed_calling_aets = ["CT1"]', True),  # as before: a list admits only its names
    ('unknown_callers = "refuse"', True),  # even with the list empty
    ('unknown_callers = "accept"', False),
    ('unknown_callers = "refuse"\nallowed_calling_aets = ["CT1"]', True),
])
def test_unknown_callers_are_refused_when_configured(lines, refuses):
    assert parse_config(_box(lines)).box.refuses_unknown is refuses


def test_listen_takes_addresses_and_interface_names():
    box = parse_config(_box('listen = ["enp1s0", "192.168.50.1", "[fd00::1]", "localhost"]\n'
                            'metrics_listen = "wg0:9100"')).box
    assert box.listen == ("enp1s0", "192.168.50.1", "fd00::1", "127.0.0.1")
    assert box.metrics_listen == "wg0:9100"


@pytest.mark.parametrize(("line", "key", "fragment"), [
    ('listen = "enp1s0"', "box.listen", "must be an array"),
    ('listen = ["has space"]', "box.listen[0]", "interface name"),
    ('listen = ["10.0.0.300"]', "box.listen[0]", "IP address"),
    ('listen = ["a-very-long-interface-name"]', "box.listen[0]", "interface name"),
    ('unknown_callers = "deny"', "box.unknown_callers", "'accept', 'refuse'"),
    ('unknown_callers = "accept"\nallowed_calling_aets = ["CT1"]', "box.unknown_callers",
     "would mean nothing"),
    ('metrics_listen = "wg0"', "box.metrics_listen", "interface:port"),
    ('metrics_listen = "bad name:9100"', "box.metrics_listen", "interface:port"),
])
def test_check_config_names_the_line_and_key_of_a_bad_listen_or_caller_setting(
        line, key, fragment):
    with pytest.raises(ConfigError) as caught:
        parse_config(_box(line), "fluxbox.toml")
    (problem,) = caught.value.problems
    assert problem.key == key and fragment in problem.message
    assert str(problem).startswith("fluxbox.toml:2: ")


def test_firewall_opens_the_dicom_port_on_the_lan_only():
    config = parse_config(_box('port = 104\nlisten = ["lan0", "192.168.50.1"]\n'
                               'metrics_listen = "127.0.0.1:9100"'))
    rules = ruleset(config).splitlines()
    assert rules[1] == "flush chain inet fluxbox services"
    assert rules[2:] == [
        'add rule inet fluxbox services iifname "lan0" tcp dport 104 accept comment "dicom"',
        "add rule inet fluxbox services ip daddr 192.168.50.1 fib daddr . iif type local "
        'tcp dport 104 accept comment "dicom"',
    ]  # metrics on loopback: nothing to open (the base ruleset admits loopback)


def test_firewall_follows_a_config_that_listens_everywhere():
    rules = ruleset(parse_config(_box('port = 11112\nmetrics_listen = "wg0:9100"')))
    assert rules.splitlines()[2:] == [
        'add rule inet fluxbox services tcp dport 11112 accept comment "dicom"',
        'add rule inet fluxbox services iifname "wg0" tcp dport 9100 accept comment "metrics"',
    ]
