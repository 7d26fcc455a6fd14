from appliance import __version__
from appliance.release import firmware_version, parse_os_release, versions


def test_os_release_quoting_and_comments():
    text = (
        '# comment\nNAME="Debian GNU/Linux"\nID=debian\n'
        "IMAGE_ID=fluxbox\nIMAGE_VERSION='0.1.0+g1'\nbad line\n"
    )
    fields = parse_os_release(text)
    assert fields["NAME"] == "Debian GNU/Linux"
    assert fields["IMAGE_VERSION"] == "0.1.0+g1"
    assert "bad line" not in fields


def test_firmware_version_of_the_image(tmp_path):
    f = tmp_path / "os-release"
    f.write_text("ID=debian\nIMAGE_ID=fluxbox\nIMAGE_VERSION=0.2.0+gabc\n")
    assert firmware_version((tmp_path / "missing", f)) == "0.2.0+gabc"
    assert versions((f,)) == {"appliance": __version__, "firmware": "0.2.0+gabc"}


def test_no_firmware_version_outside_the_image(tmp_path):
    f = tmp_path / "os-release"
    f.write_text("ID=debian\nIMAGE_ID=other\nIMAGE_VERSION=9\n")
    assert firmware_version((f,)) is None
    assert firmware_version((tmp_path / "missing",)) is None
