"""Unit tests of amibundle.ec2certs: where the EC2 certificate is looked for,
in which order, and which file a region picks.

The module's fixed folders (Amazon Linux's classic tools, the installed share
folder, the certificates shipped with the package) are pointed at tmp paths,
and the environment is passed as ``env=``, so no test depends on this
machine; the tests at the end check the shipped certificates themselves."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from amibundle import ec2certs
from amibundle.ec2certs import certificate_file_for_region, find_ec2_certificate
from amibundle.errors import CertificateError
from tests.support.common import REPO
from tests.support.errors import cli_hint

ALL_NAMES = ("cert-ec2.pem", "cert-ec2-gov.pem", "cert-ec2-cn-north-1.pem")
CLASSIC_SUBDIR = Path("etc/ec2/amitools")


@dataclass(frozen=True)
class Places:
    """Every place the lookup may search, as tmp paths."""

    explicit: Path  # a file
    env_file: Path  # a file, for $AMIBUNDLE_EC2_CERT
    amitool_home: Path  # $EC2_AMITOOL_HOME (the certs are in its etc/ec2/amitools)
    ec2_home: Path  # $EC2_HOME
    amazon_linux: Path  # folders holding the certs directly
    share: Path
    shipped: Path

    def env(self) -> dict[str, str]:
        return {
            "AMIBUNDLE_EC2_CERT": str(self.env_file),
            "EC2_AMITOOL_HOME": str(self.amitool_home),
            "EC2_HOME": str(self.ec2_home),
        }

    def folder(self, source: str) -> Path:
        """The folder in which a source's certificates sit."""
        homes = {"amitool_home": self.amitool_home, "ec2_home": self.ec2_home}
        if source in homes:
            return homes[source] / CLASSIC_SUBDIR
        folder: Path = getattr(self, source)
        return folder


FOLDER_SOURCES = ("amitool_home", "ec2_home", "amazon_linux", "share", "shipped")


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Places:
    p = Places(
        explicit=tmp_path / "explicit.pem",
        env_file=tmp_path / "from-env.pem",
        amitool_home=tmp_path / "amitool-home",
        ec2_home=tmp_path / "ec2-home",
        amazon_linux=tmp_path / "opt-aws",
        share=tmp_path / "share-certs",
        shipped=tmp_path / "shipped-certs",
    )
    monkeypatch.setattr(ec2certs, "_AMAZON_LINUX_DIR", p.amazon_linux)
    monkeypatch.setattr(ec2certs, "_SHARE_CERTS", p.share)
    monkeypatch.setattr(ec2certs, "_SHIPPED_CERTS", p.shipped)
    return p


def fill(places: Places, sources: tuple[str, ...] = FOLDER_SOURCES) -> None:
    """Puts every certificate file in each source's folder (content: its own path)."""
    places.explicit.write_text("explicit")
    places.env_file.write_text("env")
    for source in sources:
        folder = places.folder(source)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ALL_NAMES:
            (folder / name).write_text(str(folder / name))


# --- the region rule ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "name"),
    [
        ("us-gov-west-1", "cert-ec2-gov.pem"),
        ("us-gov-east-1", "cert-ec2-gov.pem"),
        ("cn-north-1", "cert-ec2-cn-north-1.pem"),
        ("cn-northwest-1", "cert-ec2-cn-north-1.pem"),
        ("us-east-1", "cert-ec2.pem"),
        ("eu-west-1", "cert-ec2.pem"),
        ("us-gov", "cert-ec2.pem"),  # a prefix, not a region of GovCloud
        ("cn", "cert-ec2.pem"),
        ("", "cert-ec2.pem"),
        (None, "cert-ec2.pem"),
    ],
)
def test_certificate_file_for_region(region: str | None, name: str) -> None:
    assert certificate_file_for_region(region) == name


@pytest.mark.parametrize(
    ("region", "env", "name"),
    [
        (None, {}, "cert-ec2.pem"),
        ("us-gov-west-1", {}, "cert-ec2-gov.pem"),
        (None, {"AWS_REGION": "cn-north-1"}, "cert-ec2-cn-north-1.pem"),
        (None, {"AWS_DEFAULT_REGION": "us-gov-west-1"}, "cert-ec2-gov.pem"),
        # the argument beats both variables
        (
            "us-east-1",
            {"AWS_REGION": "cn-north-1", "AWS_DEFAULT_REGION": "us-gov-west-1"},
            "cert-ec2.pem",
        ),
        ("cn-north-1", {"AWS_REGION": "us-gov-west-1"}, "cert-ec2-cn-north-1.pem"),
        # AWS_REGION beats AWS_DEFAULT_REGION
        (
            None,
            {"AWS_REGION": "us-gov-east-1", "AWS_DEFAULT_REGION": "cn-north-1"},
            "cert-ec2-gov.pem",
        ),
        (None, {"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "cn-north-1"}, "cert-ec2.pem"),
        # an empty variable counts as unset
        (None, {"AWS_REGION": "", "AWS_DEFAULT_REGION": "cn-north-1"}, "cert-ec2-cn-north-1.pem"),
        ("", {"AWS_REGION": "us-gov-west-1"}, "cert-ec2-gov.pem"),
    ],
)
def test_region_picks_the_file(
    region: str | None, env: dict[str, str], name: str, places: Places
) -> None:
    fill(places, ("shipped",))
    found = find_ec2_certificate(region=region, env=env)
    assert found.path == places.shipped / name
    assert found.path.read_text() == str(places.shipped / name)


@pytest.mark.parametrize("region", ["us-gov-west-1", "cn-north-1", "us-east-1"])
def test_region_applies_in_every_folder(region: str, places: Places) -> None:
    name = certificate_file_for_region(region)
    for source in FOLDER_SOURCES:
        fill(places, (source,))
        env = {"EC2_AMITOOL_HOME": str(places.amitool_home), "EC2_HOME": str(places.ec2_home)}
        assert find_ec2_certificate(region=region, env=env).path == places.folder(source) / name
        # only this file of the folder counts: without it the search moves on
        (places.folder(source) / name).unlink()


def test_a_folder_without_the_regions_file_is_skipped(places: Places) -> None:
    fill(places, ("amitool_home", "shipped"))
    (places.folder("amitool_home") / "cert-ec2-gov.pem").unlink()
    env = {"EC2_AMITOOL_HOME": str(places.amitool_home)}
    found = find_ec2_certificate(region="us-gov-west-1", env=env)
    assert found.path == places.shipped / "cert-ec2-gov.pem"
    # other regions still find the first folder
    assert find_ec2_certificate(env=env).path == places.folder("amitool_home") / "cert-ec2.pem"


# --- the order of places -------------------------------------------------------------


def test_lookup_order(places: Places) -> None:
    """Everything is present; taking away the winner each time walks the list."""
    fill(places)
    env = places.env()

    def lookup(explicit: Path | None = None) -> tuple[Path, str]:
        found = find_ec2_certificate(explicit, env=env)
        return found.path, found.source

    assert lookup(places.explicit) == (places.explicit, "given")
    assert lookup() == (places.env_file, "$AMIBUNDLE_EC2_CERT")
    del env["AMIBUNDLE_EC2_CERT"]
    expected_sources = {
        "amitool_home": "$EC2_AMITOOL_HOME",
        "ec2_home": "$EC2_HOME",
        "amazon_linux": None,
        "share": None,
        "shipped": "shipped with amibundle",
    }
    seen_sources = set()
    for source in FOLDER_SOURCES:
        path, label = lookup()
        assert path == places.folder(source) / "cert-ec2.pem", source
        if expected_sources[source]:
            assert label == expected_sources[source]
        seen_sources.add(label)
        for name in ALL_NAMES:
            (places.folder(source) / name).unlink()
    assert len(seen_sources) == len(FOLDER_SOURCES)  # each source says where it found it
    with pytest.raises(CertificateError):
        lookup()


def test_explicit_path_wins_even_if_the_env_names_a_missing_file(places: Places) -> None:
    fill(places, ())
    env = {"AMIBUNDLE_EC2_CERT": str(places.amitool_home / "missing.pem")}
    assert find_ec2_certificate(places.explicit, env=env).path == places.explicit


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_explicit_path_must_be_a_file(kind: str, places: Places) -> None:
    fill(places)  # the other places would have a certificate: no fallback
    target = places.explicit.parent / "nope.pem" if kind == "missing" else places.shipped
    with pytest.raises(CertificateError) as err:
        find_ec2_certificate(target, env=places.env())
    assert str(target) in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_env_file_must_be_a_file_and_does_not_fall_back(kind: str, places: Places) -> None:
    fill(places)
    target = places.explicit.parent / "nope.pem" if kind == "missing" else places.shipped
    env = {**places.env(), "AMIBUNDLE_EC2_CERT": str(target)}
    with pytest.raises(CertificateError, match="AMIBUNDLE_EC2_CERT") as err:
        find_ec2_certificate(env=env)
    assert str(target) in str(err.value)


def test_empty_variables_count_as_unset(places: Places) -> None:
    fill(places, ("shipped",))
    env = {"AMIBUNDLE_EC2_CERT": "", "EC2_AMITOOL_HOME": "", "EC2_HOME": ""}
    found = find_ec2_certificate(env=env)
    assert found.path == places.shipped / "cert-ec2.pem"


def test_ec2_home_is_used_without_ec2_amitool_home(places: Places) -> None:
    fill(places, ("ec2_home", "shipped"))
    found = find_ec2_certificate(env={"EC2_HOME": str(places.ec2_home)})
    assert found == ec2certs.CertificateLookup(
        places.ec2_home / CLASSIC_SUBDIR / "cert-ec2.pem", "$EC2_HOME"
    )


def test_the_process_environment_is_the_default(
    places: Places, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(places, ("ec2_home",))
    monkeypatch.delenv("AMIBUNDLE_EC2_CERT", raising=False)
    monkeypatch.setenv("EC2_HOME", str(places.ec2_home))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "cn-north-1")
    found = find_ec2_certificate()
    assert found.path == places.folder("ec2_home") / "cert-ec2-cn-north-1.pem"


# --- nothing found -----------------------------------------------------------------


@pytest.mark.parametrize("region", [None, "us-gov-west-1", "cn-north-1"])
def test_not_found_lists_every_place(region: str | None, places: Places) -> None:
    # Folders exist but hold only the other regions' files: still not found.
    name = certificate_file_for_region(region)
    fill(places, FOLDER_SOURCES)
    for source in FOLDER_SOURCES:
        (places.folder(source) / name).unlink()
    env = {"EC2_AMITOOL_HOME": str(places.amitool_home), "EC2_HOME": str(places.ec2_home)}
    with pytest.raises(CertificateError) as err:
        find_ec2_certificate(region=region, env=env)
    message = str(err.value)
    assert "\n" not in message
    positions = [message.index(str(places.folder(s) / name)) for s in FOLDER_SOURCES]
    assert positions == sorted(positions)  # listed in the order searched
    assert err.value.hint is not None
    assert "ec2_cert=" in err.value.hint
    assert "--ec2cert" in str(cli_hint(err))


def test_not_found_without_env_homes_lists_the_fixed_places(places: Places) -> None:
    with pytest.raises(CertificateError) as err:
        find_ec2_certificate(env={})
    message = str(err.value)
    for folder in (places.amazon_linux, places.shipped, places.share):
        assert str(folder / "cert-ec2.pem") in message
    assert "amitool-home" not in message and "ec2-home" not in message


def test_share_folder_is_not_listed_twice_when_it_is_the_shipped_folder(
    places: Places, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ec2certs, "_SHARE_CERTS", places.shipped)
    with pytest.raises(CertificateError) as err:
        find_ec2_certificate(env={})
    assert str(err.value).count(str(places.shipped / "cert-ec2.pem")) == 1


# --- the certificates amibundle ships ------------------------------------------------------


SHIPPED = Path(ec2certs.__file__).resolve().parent / "certs"


@pytest.mark.parametrize("name", ALL_NAMES)
def test_shipped_certificates_are_the_public_ec2_ones(name: str, shared: Path) -> None:
    """Byte for byte the classic tools' files, in certs/ and as package data."""
    reference = (shared / "ec2-certs" / name).read_bytes()
    assert (REPO / "certs" / name).read_bytes() == reference
    assert (SHIPPED / name).read_bytes() == reference


def test_package_data_declares_the_certificates() -> None:
    """A wheel carries amibundle/certs/*.pem (checked by building one in the
    report of issue 12; here: the declaration and the link it relies on)."""
    project = (REPO / "pyproject.toml").read_text()
    section = project.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^amibundle = \[.*"certs/\*\.pem".*\]$', section, re.MULTILINE), section
    assert sorted(p.name for p in SHIPPED.glob("*.pem")) == sorted(ALL_NAMES)


@pytest.mark.parametrize(
    ("region", "name"),
    [
        (None, "cert-ec2.pem"),
        ("us-gov-west-1", "cert-ec2-gov.pem"),
        ("cn-north-1", "cert-ec2-cn-north-1.pem"),
    ],
)
def test_without_any_other_the_shipped_certificate_is_used(
    region: str | None, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ec2certs, "_AMAZON_LINUX_DIR", tmp_path / "none")
    monkeypatch.setattr(ec2certs, "_SHARE_CERTS", tmp_path / "none2")
    found = find_ec2_certificate(region=region, env={})
    assert found == ec2certs.CertificateLookup(SHIPPED / name, "shipped with amibundle")


def test_describe_names_each_regions_certificate_and_its_source(places: Places) -> None:
    fill(places, ("ec2_home", "shipped"))
    (places.folder("ec2_home") / "cert-ec2-gov.pem").unlink()
    for folder in (places.folder("ec2_home"), places.shipped):
        (folder / "cert-ec2-cn-north-1.pem").unlink()
    env = {"EC2_HOME": str(places.ec2_home), "AWS_REGION": "us-gov-east-1"}
    rows = {row.file_name: row for row in ec2certs.describe_ec2_certificates(env=env)}
    assert [row.regions for row in rows.values()] == ["every other region", "us-gov-*", "cn-*"]
    default, gov, china = rows.values()
    assert (default.path, default.source) == (
        places.folder("ec2_home") / "cert-ec2.pem",
        "$EC2_HOME",
    )
    assert (gov.path, gov.source, gov.applies_here) == (
        places.shipped / "cert-ec2-gov.pem",
        "shipped with amibundle",
        True,
    )
    assert china.path is None and "no EC2 certificate cert-ec2-cn-north-1.pem" in str(china.problem)
    assert not default.applies_here and not china.applies_here
    # An explicit certificate serves every region, as it does when bundling.
    rows_given = ec2certs.describe_ec2_certificates(places.explicit, env=env)
    assert {(row.path, row.source) for row in rows_given} == {(places.explicit, "given")}
