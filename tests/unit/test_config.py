"""TOML config loading and validation: values, problems, line numbers, resolution order."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from appliance import config as config_module
from appliance.config import (
    Config,
    ConfigError,
    ConfigProblem,
    DestinationConfig,
    Geofence,
    PolicyConfig,
    WorklistConfig,
    default_config,
    load_config,
    parse_config,
    resolve_config,
)
from appliance.config import loading as config_loading
from appliance.config.scanner import LineScanner

# The example config block of PRODUCT.md, "Configuration", verbatim.
PRODUCT_EXAMPLE = """\
[box]
ae_title = "FLUXBOX"
port = 11112
data_dir = "/var/lib/fluxbox"
allowed_calling_aets = []          # empty: any modality may connect

[detect]
mode = "auto"                      # or "fixed"; `fluxbox site set` overrides both
fixed_site = ""                    # with mode = "fixed"
isolate = true                     # a study is sent only while the box is at its site

[transmit]
batch = "study"                    # "count" | "size" | "study"
batch_count = 50
batch_mb = 200
associations = 1                   # most parallel associations per destination
adaptive = true                    # tune time-outs, retries, batch and associations from the link
max_kbps = 0                       # 0: no throttle
study_quiet_s = 30                 # quiet time that closes a study
forward = "on-study-complete"      # or "streaming"

[[site]]
id = "st-marys"
name = "St Mary's Hospital"
geofence = { lat = 51.5171, lon = -0.1742, radius_m = 400 }
networks = ["10.20.0.0/16"]        # the box's own address is in one of these
ssids = ["STMARYS-IMAGING"]

[site.policy]
links = ["wired", "wifi", "cellular"]   # link classes that may carry studies
windows = []                            # e.g. ["19:00-23:00"]; empty: any time

[[site.destination]]
name = "pacs"
ae_title = "STMARYS_PACS"
host = "10.20.1.5"
port = 104
transfer_syntaxes = []             # pydicom UID keywords in order of preference, e.g.
                                   # ["JPEGLSLossless", "DeflatedExplicitVRLittleEndian"];
                                   # empty: as stored
match = {}                         # e.g. { Modality = "MG" }: only matching studies

[site.worklist]
ae_title = "STMARYS_RIS"
host = "10.20.1.6"
port = 104
sync_interval_s = 300
days_ahead = 2                     # sync pulls orders from yesterday to today + days_ahead
"""

# A valid config with two sites; error cases below edit one line of it.
# Line numbers (1-based) are fixed by this text: keep them in step with the tests.
TWO_SITES = """\
[box]
port = 104

[detect]
mode = "fixed"
fixed_site = "north"

[[site]]
id = "north"

[[site.destination]]
name = "pacs"
ae_title = "NORTH_PACS"
host = "10.1.0.5"
port = 104

[[site]]
id = "south"
geofence = { lat = 51.5, lon = -0.1, radius_m = 300 }

[[site.destination]]
name = "pacs"
ae_title = "SOUTH_PACS"
host = "10.2.0.5"
port = 104

[[site.destination]]
name = "archive"
ae_title = "SOUTH_ARCH"
host = "archive.south.example"
port = 11112
match = { Modality = "MG" }
"""


def _edit(line_no: int, new: str, text: str = TWO_SITES) -> str:
    """``text`` with line ``line_no`` (1-based) replaced by ``new``."""
    lines = text.splitlines()
    lines[line_no - 1] = new
    return "\n".join(lines) + "\n"


def _problems(text: str) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "fluxbox.toml")
    return caught.value.problems


def _only(text: str) -> ConfigProblem:
    problems = _problems(text)
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]


# --------------------------------------------------------------------------- valid configs


def test_default_config_values() -> None:
    config = default_config()
    assert config.box.ae_title == "FLUXBOX"
    assert config.box.port == 11112
    assert config.box.data_dir == Path("./var/fluxbox")
    assert not config.box.data_dir.is_absolute()
    assert config.box.key_dir is None
    assert config.box.allowed_calling_aets == ()
    assert config.detect.mode == "fixed"
    assert config.detect.fixed_site == "local"
    assert [site.id for site in config.sites] == ["local"]
    site = config.site("local")
    assert site is not None
    assert site.destinations == (
        DestinationConfig(name="pacs", ae_title="PACS", host="127.0.0.1", port=11113),
    )
    assert site.worklist is None
    assert config.source == "<embedded default>"


def test_default_config_matches_the_dataclass_defaults() -> None:
    config = default_config()
    assert config.box == type(config.box)()
    assert config.transmit == type(config.transmit)()
    assert config.links == type(config.links)()


def test_default_toml_comments_every_key() -> None:
    text = (Path(config_module.__file__).parents[1] / "default.toml").read_text()
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            assert "#" in line, f"key without a comment: {line!r}"


def test_product_example_parses() -> None:
    config = parse_config(PRODUCT_EXAMPLE, "product.toml")
    assert config.source == "product.toml"
    assert config.box.ae_title == "FLUXBOX"
    assert config.box.port == 11112
    assert config.box.data_dir == Path("/var/lib/fluxbox")
    assert config.box.allowed_calling_aets == ()
    assert (config.detect.mode, config.detect.fixed_site, config.detect.isolate) == (
        "auto",
        "",
        True,
    )
    transmit = config.transmit
    assert (transmit.batch, transmit.batch_count, transmit.batch_mb) == ("study", 50, 200)
    assert (transmit.associations, transmit.adaptive, transmit.max_kbps) == (1, True, 0)
    assert transmit.study_quiet_s == 30.0
    assert transmit.forward == "on-study-complete"
    (site,) = config.sites
    assert site.id == "st-marys"
    assert site.name == "St Mary's Hospital"
    assert site.geofence == Geofence(lat=51.5171, lon=-0.1742, radius_m=400.0)
    assert site.networks == ("10.20.0.0/16",)
    assert site.ssids == ("STMARYS-IMAGING",)
    assert site.policy == PolicyConfig(links=("wired", "wifi", "cellular"), windows=())
    assert site.destinations == (
        DestinationConfig(name="pacs", ae_title="STMARYS_PACS", host="10.20.1.5", port=104),
    )
    assert site.worklist == WorklistConfig(
        ae_title="STMARYS_RIS", host="10.20.1.6", port=104, sync_interval_s=300.0, days_ahead=2
    )


def test_every_key_is_read() -> None:
    text = textwrap.dedent(
        """\
        [box]
        ae_title = "BOX 1"
        port = 4242
        data_dir = "data/box"
        key_dir = "/keys/box"
        allowed_calling_aets = ["CT1", "MG_2"]
        reserve_mb = 0
        retention_days = 1.5
        max_pdu = 65536

        [detect]
        mode = "auto"
        fixed_site = "a"
        isolate = false

        [transmit]
        batch = "count"
        batch_count = 7
        batch_mb = 3
        associations = 16
        adaptive = false
        max_kbps = 512
        study_quiet_s = 2.5
        forward = "streaming"
        retry_initial_s = 1
        retry_max_s = 2
        connect_timeout_s = 3
        dimse_timeout_s = 4

        [links]
        classes = { wwan0 = "cellular", tun0 = "wifi" }

        [[site]]
        id = "a"
        networks = ["10.0.0.0/8", "fd00::/8"]

        [site.policy]
        links = ["wired"]
        windows = ["22:00-06:00", "12:00-24:00"]

        [[site.destination]]
        name = "pacs"
        ae_title = "PACS"
        host = "fd00::5"
        port = 104
        transfer_syntaxes = ["JPEGLSLossless", "DeflatedExplicitVRLittleEndian"]
        match = { StudyDescription = "*MAMMO*", Modality = "MG" }
        commitment = true
        """
    )
    config = parse_config(text)
    box = config.box
    assert box.ae_title == "BOX 1"
    assert box.port == 4242
    assert box.data_dir == Path("data/box")
    assert box.key_dir == Path("/keys/box")
    assert box.key_path == Path("/keys/box")
    assert box.allowed_calling_aets == ("CT1", "MG_2")
    assert (box.reserve_mb, box.retention_days, box.max_pdu) == (0, 1.5, 65536)
    assert config.detect.isolate is False
    transmit = config.transmit
    assert (transmit.batch, transmit.batch_count, transmit.batch_mb) == ("count", 7, 3)
    assert (transmit.associations, transmit.adaptive, transmit.max_kbps) == (16, False, 512)
    assert (transmit.study_quiet_s, transmit.forward) == (2.5, "streaming")
    assert (transmit.retry_initial_s, transmit.retry_max_s) == (1.0, 2.0)
    assert (transmit.connect_timeout_s, transmit.dimse_timeout_s) == (3.0, 4.0)
    assert isinstance(transmit.retry_initial_s, float)
    assert config.links.classes == (("tun0", "wifi"), ("wwan0", "cellular"))
    (site,) = config.sites
    assert site.networks == ("10.0.0.0/8", "fd00::/8")
    assert site.policy == PolicyConfig(links=("wired",), windows=("22:00-06:00", "12:00-24:00"))
    (dest,) = site.destinations
    assert dest.host == "fd00::5"
    assert dest.transfer_syntaxes == ("JPEGLSLossless", "DeflatedExplicitVRLittleEndian")
    assert dest.match == (("Modality", "MG"), ("StudyDescription", "*MAMMO*"))
    assert dest.commitment is True


def test_two_sites_base_is_valid() -> None:
    config = parse_config(TWO_SITES)
    assert [site.id for site in config.sites] == ["north", "south"]
    assert [d.name for d in config.sites[1].destinations] == ["pacs", "archive"]
    assert config.sites[1].destinations[1].match == (("Modality", "MG"),)


def test_empty_text_gives_dataclass_defaults() -> None:
    config = parse_config("")
    assert config == Config(source="<string>")


def test_empty_key_dir_means_beside_data_dir() -> None:
    config = parse_config('[box]\ndata_dir = "d"\nkey_dir = ""\n')
    assert config.box.key_dir is None
    assert config.box.key_path == Path("d-key")


# --------------------------------------------------------------------------- problems


def test_problem_and_error_strings() -> None:
    problem = ConfigProblem("fluxbox.toml", 12, "site[0].destination[1].port", "must be x")
    assert str(problem) == "fluxbox.toml:12: site[0].destination[1].port: must be x"
    assert str(ConfigProblem("f.toml", None, "box", "m")) == "f.toml: box: m"
    assert str(ConfigProblem("f.toml", 3, "", "m")) == "f.toml:3: m"
    error = ConfigError([problem, ConfigProblem("f.toml", None, "box", "m")])
    assert str(error) == f"{problem}\nf.toml: box: m"


def test_wrong_type_port_in_second_destination() -> None:
    problem = _only(_edit(31, 'port = "abc"'))
    assert str(problem) == (
        "fluxbox.toml:31: site[1].destination[1].port: must be an integer 1-65535, got 'abc'"
    )


@pytest.mark.parametrize(
    ("line_no", "new", "key", "fragment"),
    [
        (2, "prot = 104", "box.prot", "unknown key 'prot'; did you mean 'port'?"),
        (2, "port = 70000", "box.port", "1-65535"),
        (2, "port = 0", "box.port", "1-65535"),
        (2, 'port = "104"', "box.port", "without quotes"),
        (2, "port = true", "box.port", "got true"),
        (2, 'ae_title = "ABCDEFGHIJKLMNOPQ"', "box.ae_title", "1-16"),
        (2, 'ae_title = "A\\\\B"', "box.ae_title", "backslash"),
        (2, 'ae_title = "   "', "box.ae_title", "not all spaces"),
        (2, 'ae_title = "CAFÉ"', "box.ae_title", "printable ASCII"),
        (2, 'allowed_calling_aets = ["OK", ""]', "box.allowed_calling_aets[1]", "AE title"),
        (2, 'allowed_calling_aets = "CT1"', "box.allowed_calling_aets", "must be an array"),
        (2, "data_dir = 5", "box.data_dir", "path"),
        (2, "reserve_mb = -1", "box.reserve_mb", ">= 0"),
        (2, "max_pdu = 100", "box.max_pdu", "an integer 4096-4194304"),
        (2, "max_pdu = 0", "box.max_pdu", "0 (unlimited) is not allowed"),
        (2, "max_pdu = 8388608", "box.max_pdu", "an integer 4096-4194304"),
        (5, 'mode = "manual"', "detect.mode", "'auto', 'fixed'"),
        (5, 'isolate = "yes"', "detect.isolate", "true or false"),
        (6, 'fixed_site = "nort"', "detect.fixed_site", "did you mean 'north'?"),
        (6, 'fixed_site = ""', "detect.fixed_site", 'mode = "fixed"'),
        (6, "fixed_site = 3", "detect.fixed_site", "string"),
        (18, 'id = "north"', "site[1].id", "duplicate site id 'north', also used by site[0]"),
        (18, 'id = "no spaces"', "site[1].id", "letters, digits"),
        (13, 'ae_title = "NORTH\\\\PACS"', "site[0].destination[0].ae_title", "backslash"),
        (14, 'host = "10.1.0.500"', "site[0].destination[0].host", "IP address or host"),
        (14, 'host = "has space"', "site[0].destination[0].host", "IP address or host"),
        (15, "port = 65536", "site[0].destination[0].port", "1-65535"),
        (
            19,
            "geofence = { lat = 91, lon = -0.1, radius_m = 300 }",
            "site[1].geofence.lat",
            "-90 to 90",
        ),
        (19, 'networks = ["10.2.0.0/33"]', "site[1].networks[0]", "CIDR"),
        (19, 'networks = ["10.2.0.1/16"]', "site[1].networks[0]", "did you mean '10.2.0.0/16'"),
        (19, 'ssids = ["x" ]', None, None),
        (19, 'ssids = [""]', "site[1].ssids[0]", "1-32 bytes"),
        (28, 'name = "pacs"', "site[1].destination[1].name", "duplicate destination name"),
        (30, 'host = ""', "site[1].destination[1].host", "IP address or host"),
        (
            32,
            'match = { Modalty = "MG" }',
            "site[1].destination[1].match.Modalty",
            "did you mean 'Modality'?",
        ),
        (32, "match = { Modality = 5 }", "site[1].destination[1].match.Modality", "quotes"),
        (32, 'match = "MG"', "site[1].destination[1].match", "inline table"),
        (
            32,
            'transfer_syntaxes = ["JPEGLSLosless"]',
            "site[1].destination[1].transfer_syntaxes[0]",
            "did you mean 'JPEGLSLossless'?",
        ),
        (
            32,
            'transfer_syntaxes = ["1.2.840.10008.1.2.4.80"]',
            "site[1].destination[1].transfer_syntaxes[0]",
            "keyword 'JPEGLSLossless'",
        ),
        (
            32,
            'transfer_syntaxes = ["CTImageStorage"]',
            "site[1].destination[1].transfer_syntaxes[0]",
            "transfer syntax keyword",
        ),
        (32, 'commitment = "yes"', "site[1].destination[1].commitment", "true or false"),
    ],
)
def test_single_problem_names_line_and_key(
    line_no: int, new: str, key: str | None, fragment: str | None
) -> None:
    text = _edit(line_no, new)
    if key is None:
        parse_config(text)
        return
    problem = _only(text)
    assert (problem.source, problem.line, problem.key) == ("fluxbox.toml", line_no, key)
    assert fragment in problem.message


@pytest.mark.parametrize(
    ("body", "line_no", "key", "fragment"),
    [
        ("[transmit]\nassociations = 17\n", 2, "transmit.associations", "1-16"),
        ("[transmit]\nassociations = 0\n", 2, "transmit.associations", "1-16"),
        ("[transmit]\nbatch_count = 0\n", 2, "transmit.batch_count", ">= 1"),
        ("[transmit]\nbatch_mb = -5\n", 2, "transmit.batch_mb", ">= 1"),
        ('[transmit]\nbatch = "studies"\n', 2, "transmit.batch", "did you mean 'study'?"),
        ('[transmit]\nforward = "stream"\n', 2, "transmit.forward", "'streaming'"),
        ("[transmit]\nstudy_quiet_s = 0\n", 2, "transmit.study_quiet_s", "> 0"),
        ("[transmit]\nstudy_quiet_s = nan\n", 2, "transmit.study_quiet_s", "> 0"),
        (
            "[transmit]\nretry_initial_s = 10\nretry_max_s = 5\n",
            3,
            "transmit.retry_max_s",
            "at least",
        ),
        ('[links]\nclasses = { wwan0 = "lte" }\n', 2, "links.classes.wwan0", "'cellular'"),
        ("[boxx]\n", 1, "boxx", "unknown key 'boxx'; did you mean 'box'?"),
        ("box = 5\n", 1, "box", "must be a table"),
        ('[site]\nid = "a"\n', 1, "site", "write [[site]], not [site]"),
    ],
)
def test_section_problems(body: str, line_no: int, key: str, fragment: str) -> None:
    problem = _only(body)
    assert (problem.line, problem.key) == (line_no, key)
    assert fragment in problem.message


def _site_with(lines: str) -> str:
    """A one-site config: the site header on line 1, ``lines`` from line 2, a destination after."""
    return (
        '[[site]]\nid = "a"\n'
        + lines
        + '\n[[site.destination]]\nname = "p"\nae_title = "P"\nhost = "h"\nport = 1\n'
    )


@pytest.mark.parametrize(
    ("lines", "line_no", "key", "fragment"),
    [
        ('[site.policy]\nlinks = ["wired", "lte"]', 4, "site[0].policy.links[1]", "'cellular'"),
        ("[site.policy]\nlinks = []", 4, "site[0].policy.links", "at least one"),
        ('[site.policy]\nwindows = ["19:00-23:60"]', 4, "site[0].policy.windows[0]", "HH:MM"),
        ('[site.policy]\nwindows = ["25:00-01:00"]', 4, "site[0].policy.windows[0]", "HH:MM"),
        ('[site.policy]\nwindows = ["7:00-9:00"]', 4, "site[0].policy.windows[0]", "HH:MM"),
        ('[site.policy]\nwindows = ["10:00-10:00"]', 4, "site[0].policy.windows[0]", "differ"),
        ('[site.worklist]\nae_title = "R"\nhost = "h"\nport = 0', 6, "site[0].worklist.port", ""),
        ('[site.worklist]\nae_title = "R"\nport = 1', 3, "site[0].worklist.host", "add host ="),
        (
            '[site.worklist]\nae_title = "R"\nhost = "h"\nport = 1\ndays_ahead = -1',
            7,
            "site[0].worklist.days_ahead",
            "0-365",
        ),
        ("geofence = { lat = 1, lon = 2 }", 3, "site[0].geofence.radius_m", "add radius_m ="),
    ],
)
def test_site_table_problems(lines: str, line_no: int, key: str, fragment: str) -> None:
    problem = _only(_site_with(lines))
    assert (problem.line, problem.key) == (line_no, key)
    assert fragment in problem.message


def test_missing_required_key_points_at_the_block() -> None:
    problem = _only(_edit(14, "# no host"))
    assert (problem.line, problem.key) == (11, "site[0].destination[0].host")
    assert "add host = " in problem.message


def test_site_without_destination() -> None:
    text = TWO_SITES + '\n[[site]]\nid = "east"\nname = "East"\n'
    problem = _only(text)
    assert problem.key == "site[2].destination"
    assert problem.line == TWO_SITES.count("\n") + 2  # the [[site]] header of "east"
    assert "site 'east' has no destination" in problem.message
    assert "[[site.destination]]" in problem.message


def test_destination_as_single_table() -> None:
    text = '[[site]]\nid = "a"\n[site.destination]\nname = "p"\n'
    problem = _only(text)
    assert (problem.line, problem.key) == (3, "site[0].destination")
    assert "[[site.destination]]" in problem.message


def test_fixed_mode_without_sites() -> None:
    problem = _only('[detect]\nmode = "fixed"\n')
    assert (problem.line, problem.key) == (1, "detect.fixed_site")
    assert "add a [[site]]" in problem.message


def test_fixed_site_unknown_in_auto_mode() -> None:
    problem = _only(_edit(5, 'mode = "auto"', _edit(6, 'fixed_site = "west"')))
    assert (problem.line, problem.key) == (6, "detect.fixed_site")
    assert "'north', 'south'" in problem.message


def test_all_problems_are_reported_in_line_order() -> None:
    text = _edit(2, "prot = 104")
    text = _edit(9, 'id = "south"', text)
    text = _edit(15, 'port = "x"', text)
    text = _edit(32, 'match = { Modalty = "MG" }', text)
    text += '\n[transmit]\nassociations = 99\nbatch = "sometimes"\n'
    problems = _problems(text)
    found = [(p.line, p.key) for p in problems]
    assert found == [
        (2, "box.prot"),
        (6, "detect.fixed_site"),  # "north" is gone, so fixed_site names no site
        (15, "site[0].destination[0].port"),
        (18, "site[1].id"),
        (32, "site[1].destination[1].match.Modalty"),
        (35, "transmit.associations"),
        (36, "transmit.batch"),
    ]
    assert "duplicate site id" in problems[3].message


def test_line_numbers_survive_multiline_values_and_strings() -> None:
    text = textwrap.dedent(
        '''\
        [box]
        allowed_calling_aets = [
            "CT1",   # a comment with key = value in it
            "MR1",
        ]
        ae_title = """FLUX
        [[site]]
        """
        [[site]]   # first
        id = "a"
        name = "x = [y]"
        [site.policy]
        windows = [
            "19:00-23:00",
            "bad",
        ]
        links = ["wifi"]
        '''
    )
    problems = _problems(text)
    found = [(p.line, p.key) for p in problems]
    assert (6, "box.ae_title") in found  # multi-line value: the line of its key
    assert (13, "site[0].policy.windows[1]") in found
    assert (9, "site[0].destination") in found
    assert all(p.line != 7 for p in problems)  # line 7 is inside a string, not a header


def test_scanner_maps_inline_table_keys() -> None:
    text = textwrap.dedent(
        """\
        [[site]]
        geofence = { lat = 1, "lon" = { deep = 2 }, radius_m = 3 }  # { x = 1
        [[site.destination]]
        [[site]]
        [[site.destination]]
        [[site.destination]]
        match = { Modality = "MG", "Study Description" = "a,b = {c}" }
        [site.policy]
        links = [{ a = 1 }, "wired"]
        """
    )
    lines = LineScanner().scan(text)
    assert lines == {
        "site": 1,
        "site[0]": 1,
        "site[0].geofence": 2,
        "site[0].geofence.lat": 2,
        "site[0].geofence.lon": 2,
        "site[0].geofence.lon.deep": 2,
        "site[0].geofence.radius_m": 2,
        "site[0].destination": 3,
        "site[0].destination[0]": 3,
        "site[1]": 4,
        "site[1].destination": 5,
        "site[1].destination[0]": 5,
        "site[1].destination[1]": 6,
        "site[1].destination[1].match": 7,
        "site[1].destination[1].match.Modality": 7,
        "site[1].destination[1].match.Study Description": 7,
        "site[1].policy": 8,
        "site[1].policy.links": 9,
    }


def test_quoted_and_dotted_keys_get_lines() -> None:
    text = '[box]\n"prot" = 1\n\n[transmit]\nx.y = 2\n'
    found = [(p.line, p.key) for p in _problems(text)]
    assert found == [(2, "box.prot"), (5, "transmit.x")]


def test_toml_syntax_error_names_line() -> None:
    problem = _only('[box]\nport = 104\nae_title = "FLUX\n')
    assert problem.line == 3
    assert problem.key == ""
    assert str(problem).startswith("fluxbox.toml:3: TOML syntax error:")


def test_toml_duplicate_key_is_syntax_error() -> None:
    problem = _only("[box]\nport = 1\nport = 2\n")
    assert problem.line == 3
    assert "TOML syntax error" in problem.message


# --------------------------------------------------------------------------- files


def test_load_config_reads_file(tmp_path: Path) -> None:
    path = tmp_path / "fluxbox.toml"
    path.write_text(PRODUCT_EXAMPLE)
    config = load_config(path)
    assert config.source == str(path)
    assert config.sites[0].id == "st-marys"
    assert load_config(str(path)) == config


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert problem.source == str(path)
    assert problem.line is None
    assert "cannot read" in problem.message
    assert str(caught.value).startswith(f"{path}: cannot read")


def test_load_config_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)


def test_load_config_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[box]\n\nport = = 3\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert (problem.source, problem.line) == (str(path), 3)


def test_load_config_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[box]\nae_title = "CAF\xc9"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert problem.line == 2
    assert "UTF-8" in problem.message


def test_load_config_validation_names_file(tmp_path: Path) -> None:
    path = tmp_path / "f.toml"
    path.write_text("[box]\nport = 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}:2: box.port: must be an integer 1-65535, got 0"


# --------------------------------------------------------------------------- resolution


@pytest.fixture
def config_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Three distinct config files; the system path points at a file not yet written."""
    files = {}
    for name, port in (("explicit", 1001), ("env", 1002), ("system", 1003)):
        files[name] = tmp_path / f"{name}.toml"
        if name != "system":
            files[name].write_text(f"[box]\nport = {port}\n")
    monkeypatch.setattr(config_loading, "SYSTEM_CONFIG", files["system"])
    monkeypatch.delenv("FLUXBOX_CONFIG", raising=False)
    return files


def test_resolve_explicit_first(
    config_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    config_files["system"].write_text("[box]\nport = 1003\n")
    monkeypatch.setenv("FLUXBOX_CONFIG", str(config_files["env"]))
    config = resolve_config(str(config_files["explicit"]))
    assert (config.box.port, config.source) == (1001, str(config_files["explicit"]))


def test_resolve_env_before_system(
    config_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    config_files["system"].write_text("[box]\nport = 1003\n")
    monkeypatch.setenv("FLUXBOX_CONFIG", str(config_files["env"]))
    assert resolve_config(None).box.port == 1002


def test_resolve_system_before_default(config_files: dict[str, Path]) -> None:
    config_files["system"].write_text("[box]\nport = 1003\n")
    assert resolve_config(None).box.port == 1003


def test_resolve_default_last(config_files: dict[str, Path]) -> None:
    assert resolve_config(None) == default_config()


def test_resolve_env_pointing_nowhere_is_an_error(
    config_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLUXBOX_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="missing.toml: cannot read"):
        resolve_config(None)


def test_resolve_bad_explicit_file_is_an_error(config_files: dict[str, Path]) -> None:
    config_files["explicit"].write_text("[box]\nport = 0\n")
    with pytest.raises(ConfigError, match="box.port"):
        resolve_config(str(config_files["explicit"]))


# --------------------------------------------------------------------------- TLS settings


@pytest.mark.parametrize(
    ("box", "key", "fragment"),
    [
        ('tls_ca = "/etc/ca.pem"', "box.tls_ca", "plain DICOM"),
        ('tls_key = "/etc/key.pem"', "box.tls_key", "add tls_cert"),
        ('tls_cert = "/etc/cert.pem"', "box.tls_cert", "add tls_key"),
    ],
)
def test_half_configured_tls_on_the_box_is_refused(box: str, key: str, fragment: str) -> None:
    problem = _only(f"[box]\n{box}\n")
    assert (problem.line, problem.key) == (2, key)
    assert fragment in problem.message


@pytest.mark.parametrize(
    ("lines", "key", "fragment"),
    [
        ('tls_cert = "/c.pem"\ntls_key = "/k.pem"', "tls_ca", "sent in clear"),
        ('tls_ca = "/ca.pem"\ntls_key = "/k.pem"', "tls_key", "add tls_cert"),
    ],
)
def test_half_configured_tls_to_a_destination_is_refused(
    lines: str, key: str, fragment: str
) -> None:
    text = (
        '[[site]]\nid = "a"\n[[site.destination]]\nname = "p"\nae_title = "P"\nhost = "h"\n'
        f"port = 1\n{lines}\n"
    )
    problem = _only(text)
    assert problem.key == f"site[0].destination[0].{key}"
    assert fragment in problem.message


def test_complete_tls_settings_are_accepted() -> None:
    parse_config(
        '[box]\ntls_cert = "/c.pem"\ntls_key = "/k.pem"\ntls_ca = "/ca.pem"\n'
        '[[site]]\nid = "a"\n[[site.destination]]\nname = "p"\nae_title = "P"\nhost = "h"\n'
        'port = 1\ntls_ca = "/ca.pem"\n',
        "fluxbox.toml",
    )


def test_a_half_tls_setting_that_reaches_run_time_raises_instead_of_clear_text() -> None:
    from appliance.config import DestinationConfig
    from appliance.delivery import tls_context

    half = DestinationConfig("p", "P", "h", 1, tls_cert=Path("/c.pem"), tls_key=Path("/k.pem"))
    with pytest.raises(ValueError, match="sent in clear"):
        tls_context(half)
    assert tls_context(DestinationConfig("p", "P", "h", 1)) is None
