"""The S3 commands' command lines (classic-cli.md §1.9, §4.2, §5.2, §7.2): argv -> the
``amibundle.s3`` call they make, the order of the classic parameter checks, exit codes
and messages, and the delete confirmation. The library is replaced by recording fakes
here; tests/s3/test_commands.py runs the same commands against real S3 servers.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from amibundle import s3
from amibundle.cli import CLASSIC_TOOLS, COMMANDS, classic_main, main
from amibundle.cli import delete as delete_cli
from amibundle.cli import download as download_cli
from amibundle.cli import upload as upload_cli
from amibundle.cli._options import OptionParser, Style, parse_args
from amibundle.cli._prompt import DeclinedError
from amibundle.cli._s3options import is_v2_safe
from amibundle.progress import Stage

CLASSIC = {
    "upload": "ec2-upload-bundle",
    "download": "ec2-download-bundle",
    "delete": "ec2-delete-bundle",
}
MODULES = {"upload": upload_cli, "download": download_cli, "delete": delete_cli}
DEFAULTS = s3.S3Settings()


@dataclass
class Calls:
    """What the fake library saw, and what it does when called."""

    made: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)
    raises: BaseException | None = None
    delete_keys: list[str] = field(default_factory=lambda: ["p/a.manifest.xml", "p/a.part.0"])
    deleted: list[str] = field(default_factory=list)

    @property
    def only(self) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        assert len(self.made) == 1, self.made
        return self.made[0]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    record = Calls()

    def upload(*args: Any, **kwargs: Any) -> s3.UploadResult:
        record.made.append(("upload", args, kwargs))
        if record.raises is not None:
            raise record.raises
        # As the library does once the manifest, parts and bucket are checked.
        kwargs["progress"].start(Stage.UPLOAD, 12345)
        kwargs["progress"].finish(Stage.UPLOAD)
        bucket = args[1]
        return s3.UploadResult(
            bucket=bucket,
            region="us-east-1",
            manifest_key=bucket.key(args[0].name),
            manifest_uploaded=not kwargs["skip_manifest"],
            parts_uploaded=1,
            parts_skipped=1,
            parts_before_first=0,
            keys_uploaded=(bucket.key("a.part.0"), bucket.key(args[0].name)),
            bytes_uploaded=12345,
            seconds=0.5,
            throughput=24690.0,
            bucket_created=True,
            ownership_changed=False,
        )

    def download(*args: Any, **kwargs: Any) -> s3.DownloadResult:
        record.made.append(("download", args, kwargs))
        if record.raises is not None:
            raise record.raises
        kwargs["progress"].start(Stage.DOWNLOAD, 999)
        kwargs["progress"].finish(Stage.DOWNLOAD)
        path = kwargs["directory"] / kwargs["manifest_name"]
        return s3.DownloadResult(
            bucket=args[0],
            manifest_key=args[0].key(kwargs["manifest_name"]),
            manifest_path=path,
            part_paths=(),
            parts_downloaded=2,
            parts_skipped=0,
            bytes_downloaded=999,
            seconds=0.25,
            throughput=3996.0,
        )

    def delete(*args: Any, **kwargs: Any) -> s3.DeleteResult:
        record.made.append(("delete", args, kwargs))
        if record.raises is not None:
            raise record.raises
        keys = list(record.delete_keys)
        declined = not kwargs["confirm"](keys)
        if not declined:
            record.deleted += keys
        return s3.DeleteResult(
            bucket=args[0],
            manifest_key=keys[0],
            keys=tuple(keys),
            deleted=() if declined else tuple(keys),
            declined=declined,
            bucket_removed=kwargs["clear"] and not declined,
            seconds=0.1,
        )

    monkeypatch.setattr(s3, "upload_bundle", upload)
    monkeypatch.setattr(s3, "download_bundle", download)
    monkeypatch.setattr(s3, "delete_bundle", delete)
    return record


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    manifest = tmp_path / "img.manifest.xml"
    manifest.write_text("<manifest/>")
    key = tmp_path / "pk.pem"
    key.write_text("key")
    (tmp_path / "out").mkdir()
    return {
        "manifest": str(manifest),
        "key": str(key),
        "dir": str(tmp_path / "out"),
        "missing": str(tmp_path / "missing.xml"),
    }


@pytest.fixture(autouse=True)
def _no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever runs the tests, stdin is not a terminal and holds nothing.
    monkeypatch.setattr("sys.stdin", io.StringIO(""))


def expand(argv: list[str], files: dict[str, str]) -> list[str]:
    return [word.format(**files) for word in argv]


def run(command: str, argv: list[str], style: Style) -> int:
    if style is Style.CLASSIC:
        return classic_main(CLASSIC[command], argv)
    return main([command, *argv])


BOTH = pytest.mark.parametrize("style", list(Style), ids=lambda s: s.value)


# -- argv -> library call --------------------------------------------------------------

UP = ["-b", "bkt/imgs", "-m", "{manifest}"]
# command, argv, expected keyword arguments of the call (settings separately, below)
CALLS: list[Any] = [
    pytest.param(
        "upload",
        UP,
        {
            "directory": None,
            "acl": "aws-exec-read",
            "location": None,
            "first_part": 0,
            "skip_manifest": False,
            "fix_ownership": False,
        },
        id="upload-defaults",
    ),
    pytest.param("upload", [*UP, "--acl", "public-read"], {"acl": "public-read"}, id="acl"),
    pytest.param(
        "upload",
        [*UP, "--acl=bucket-owner-full-control"],
        {"acl": "bucket-owner-full-control"},
        id="acl-equals",
    ),
    pytest.param("upload", [*UP, "--location", "EU"], {"location": "EU"}, id="location-EU"),
    pytest.param("upload", [*UP, "--loc", "eu-central-1"], {"location": "eu-central-1"}, id="loc"),
    pytest.param("upload", [*UP, "--location", "us-east-1"], {"location": "US"}, id="us-east-1=US"),
    pytest.param("upload", [*UP, "--location=US"], {"location": "US"}, id="location-US"),
    pytest.param("upload", [*UP, "--part", "3"], {"first_part": 3}, id="part"),
    pytest.param("upload", [*UP, "--part", "0x10"], {"first_part": 16}, id="part-ruby-hex"),
    pytest.param("upload", [*UP, "--part", "-2"], {"first_part": 0}, id="part-negative-is-all"),
    pytest.param("upload", [*UP, "--sk"], {"skip_manifest": True}, id="skipmanifest-prefix"),
    pytest.param("upload", [*UP, "--fix"], {"fix_ownership": True}, id="fix-ownership"),
    pytest.param("upload", [*UP, "-d", "{dir}"], {"directory": "{dir}"}, id="directory"),
    pytest.param("upload", [*UP, "-d{dir}"], {"directory": "{dir}"}, id="directory-glued"),
    pytest.param(
        "download",
        ["-b", "bkt"],
        {"manifest_name": "image.manifest.xml", "directory": "."},
        id="download-defaults",
    ),
    pytest.param(
        "download",
        ["-b", "bkt", "-p", "root.img"],
        {"manifest_name": "root.img.manifest.xml"},
        id="download-prefix",
    ),
    pytest.param(
        "download",
        ["-b", "bkt", "--pre=root.img"],
        {"manifest_name": "root.img.manifest.xml"},
        id="download-pre",
    ),
    pytest.param(
        "download",
        ["-b", "bkt", "-mroot.img.manifest.xml", "-d", "{dir}"],
        {"manifest_name": "root.img.manifest.xml", "directory": "{dir}"},
        id="download-manifest",
    ),
    pytest.param(
        "download",
        ["-b", "bkt", "-k", "{key}"],
        {"manifest_name": "image.manifest.xml"},
        id="download-privatekey-accepted",
    ),
    pytest.param(
        "delete",
        ["-b", "bkt/p", "-p", "a", "-y"],
        {"manifest": None, "prefix": "a", "clear": False},
        id="delete-prefix",
    ),
    pytest.param(
        "delete",
        ["-b", "bkt/p", "-m", "{manifest}", "--clear", "--batch"],
        {"manifest": "{manifest}", "prefix": None, "clear": True},
        id="delete-manifest-clear",
    ),
]


def _comparable(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


@BOTH
@pytest.mark.parametrize(("command", "argv", "expected"), CALLS)
def test_argv_to_library_call(
    command: str,
    argv: list[str],
    expected: dict[str, Any],
    style: Style,
    files: dict[str, str],
    calls: Calls,
) -> None:
    assert run(command, expand(argv, files), style) == 0
    name, args, kwargs = calls.only
    assert name == command
    got = {key: _comparable(kwargs[key]) for key in expected}
    assert got == {
        key: value and value.format(**files) if isinstance(value, str) else value
        for key, value in expected.items()
    }
    assert kwargs["settings"] == s3.S3Settings()
    bucket = args[1] if command == "upload" else args[0]
    assert isinstance(bucket, s3.BucketRef)
    if command == "upload":
        assert args[0] == Path(files["manifest"])
        assert kwargs["progress"] is not None


BUCKETS = [
    pytest.param(["-b", "bkt"], s3.BucketRef("bkt", ""), id="plain"),
    pytest.param(["--buck", "bkt/a/b/"], s3.BucketRef("bkt", "a/b/"), id="unique-prefix"),
    pytest.param(["-b/bkt/a"], s3.BucketRef("bkt", "a/"), id="glued-leading-slash"),
    pytest.param(["--bucket=bkt/x"], s3.BucketRef("bkt", "x/"), id="equals"),
    pytest.param(["-b", "one", "-b", "two"], s3.BucketRef("two", ""), id="last-wins"),
]


@pytest.mark.parametrize(("argv", "bucket"), BUCKETS)
def test_bucket_argument(
    argv: list[str], bucket: s3.BucketRef, files: dict[str, str], calls: Calls
) -> None:
    assert classic_main("ec2-download-bundle", argv) == 0
    assert calls.only[1][0] == bucket


# argv -> S3Settings fields different from the defaults
SETTINGS: list[Any] = [
    pytest.param(
        ["-a", "AKID", "-s", "SECRET"], {"access_key": "AKID", "secret_key": "SECRET"}, id="keys"
    ),
    pytest.param(
        ["-aAKID", "-sSECRET", "-tTOKEN"],
        {"access_key": "AKID", "secret_key": "SECRET", "session_token": "TOKEN"},
        id="keys-glued-and-token",
    ),
    pytest.param(
        ["--access=AKID", "--secret", "SECRET", "--deleg", "TOKEN"],
        {"access_key": "AKID", "secret_key": "SECRET", "session_token": "TOKEN"},
        id="long-prefixes",
    ),
    pytest.param(["--profile", "ci"], {"profile": "ci"}, id="profile"),
    pytest.param(["--region", "eu-west-1"], {"region": "eu-west-1"}, id="region"),
    pytest.param(["--reg", "ap-south-1"], {"region": "ap-south-1"}, id="region-prefix"),
    pytest.param(
        ["--url", "http://127.0.0.1:8333"], {"endpoint_url": "http://127.0.0.1:8333"}, id="url"
    ),
    pytest.param(["--retry"], {"attempts": 5}, id="retry-classic-5"),
    pytest.param(["--ret"], {"attempts": 5}, id="retry-prefix"),
    pytest.param(["--retry=9"], {"attempts": 9}, id="retry-count"),
    pytest.param(["--retry=1"], {"attempts": 1}, id="retry-once"),
    pytest.param(["--jobs", "1"], {"jobs": 1}, id="jobs"),
    pytest.param(["--jobs=32"], {"jobs": 32}, id="jobs-equals"),
    pytest.param(["--sigv", "4"], {}, id="sigv4"),
    pytest.param(["--sigv=2"], {}, id="sigv2"),
]


@BOTH
@pytest.mark.parametrize("command", ["upload", "download", "delete"])
@pytest.mark.parametrize(("argv", "changed"), SETTINGS)
def test_settings(
    command: str,
    argv: list[str],
    changed: dict[str, Any],
    style: Style,
    files: dict[str, str],
    calls: Calls,
) -> None:
    base = {"upload": UP, "download": ["-b", "bkt"], "delete": ["-b", "bkt", "-p", "a", "-y"]}
    assert run(command, [*expand(base[command], files), *argv], style) == 0
    settings = calls.only[2]["settings"]
    assert settings == s3.S3Settings(**{**DEFAULTS.__dict__, **changed})


def test_retry_value_needs_equals(
    files: dict[str, str], calls: Calls, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ruby's optional values come only glued: ``--retry 7`` is --retry plus a stray 7."""
    assert classic_main("ec2-download-bundle", ["-b", "bkt", "--retry", "7"]) == 0
    assert calls.only[2]["settings"].attempts == 5
    assert "ignoring stray argument '7'" in capsys.readouterr().err


def test_sigv2_prints_a_note_and_sigv4_does_not(
    files: dict[str, str], calls: Calls, capsys: pytest.CaptureFixture[str]
) -> None:
    assert classic_main("ec2-download-bundle", ["-b", "bkt", "--sigv", "2"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "--sigv" in line]
    assert len(notes) == 1 and "Signature Version 4 is always used" in notes[0]
    assert classic_main("ec2-download-bundle", ["-b", "bkt", "--sigv", "4"]) == 0
    assert "--sigv" not in capsys.readouterr().err


# -- parameter errors and the order of the checks ----------------------------------------

# command, argv, the one-line message expected (a regex), classic order of §4.2, §5.2, §7.2
REJECTS: list[Any] = [
    pytest.param("upload", [], r"missing mandatory option --bucket$", id="up-nothing"),
    pytest.param("upload", ["-s", "S"], r"missing mandatory option --access-key", id="up-s-only"),
    pytest.param("upload", ["-a", "A"], r"missing mandatory option --secret-key", id="up-a-only"),
    pytest.param(
        "upload", ["-a", "A", "-m", "{manifest}"], r"--secret-key", id="up-secret-before-bucket"
    ),
    pytest.param("upload", ["-t", "T", "-b", "b"], r"--delegation-token needs", id="up-token-only"),
    pytest.param(
        "upload",
        ["--sigv", "3", "-m", "{manifest}"],
        r"missing mandatory option --bucket$",
        id="up-bucket-before-sigv",
    ),
    pytest.param(
        "upload",
        ["-b", "bkt", "--sigv", "3"],
        r"invalid value for --sigv: '3'",
        id="up-sigv-before-manifest",
    ),
    pytest.param(
        "upload", ["-b", "bkt"], r"missing mandatory option --manifest$", id="up-manifest"
    ),
    pytest.param(
        "upload",
        ["-m", "{missing}"],
        r"invalid value for --manifest: .*no such file",
        id="up-manifest-checked-while-parsing",
    ),
    pytest.param(
        "upload", [*UP, "--acl", "authenticated-read"], r"invalid value for --acl", id="up-acl"
    ),
    pytest.param(
        "upload", [*UP, "--acl", "aws"], r"invalid value for --acl", id="up-acl-no-prefix"
    ),
    pytest.param(
        "upload",
        [*UP, "--location", "Mars"],
        r"invalid value for --location: 'Mars'",
        id="up-location",
    ),
    pytest.param(
        "upload", [*UP, "--location", "eu"], r"invalid value for --location", id="up-location-case"
    ),
    pytest.param(
        "upload", [*UP, "--part", "two"], r"invalid value for --part: 'two'", id="up-part"
    ),
    pytest.param(
        "upload", [*UP, "-d", "{missing}"], r"--directory: .*no such directory", id="up-directory"
    ),
    pytest.param(
        "upload",
        ["-b", "b", "--re", "x"],
        r"ambiguous option --re: could be --region or --retry",
        id="re-ambiguous",
    ),
    pytest.param("upload", [*UP, "--bogus"], r"unknown option: --bogus", id="unknown-long"),
    pytest.param("upload", [*UP, "-Z"], r"unknown option", id="unknown-short"),
    pytest.param("upload", [*UP, "--retry=0"], r"invalid value for --retry", id="retry-0"),
    pytest.param("upload", [*UP, "--jobs", "0"], r"invalid value for --jobs", id="jobs-0"),
    pytest.param(
        "upload", [*UP, "--url", "s3.amazonaws.com"], r"invalid value for --url", id="url-no-scheme"
    ),
    pytest.param("upload", [*UP, "--url", "ftp://h"], r"invalid value for --url", id="url-ftp"),
    pytest.param(
        "upload", [*UP, "--region", "eu west"], r"invalid value for --region", id="region"
    ),
    pytest.param(
        "upload",
        [*UP, "--profile", "p", "-a", "A", "-s", "S"],
        r"--profile cannot be combined with --access-key",
        id="profile-and-keys",
    ),
    pytest.param(
        "upload",
        ["-b", "a..b/../x", "-m", "{manifest}"],
        r"invalid value for --bucket",
        id="bucket-dotdot-prefix",
    ),
    pytest.param(
        "upload",
        ["-b", "x", "-m", "{manifest}"],
        r"invalid value for --bucket: .*'x'",
        id="bucket-too-short",
    ),
    pytest.param("download", [], r"missing mandatory option --bucket$", id="down-nothing"),
    pytest.param(
        "download",
        ["-b", "b12", "--sigv", "5", "-m", "a", "-p", "b"],
        r"--sigv",
        id="down-sigv-before-combination",
    ),
    pytest.param(
        "download",
        ["-b", "b12", "-m", "a", "-p", "b"],
        r"--manifest cannot be combined with --prefix",
        id="down-m-and-p",
    ),
    pytest.param(
        "download",
        ["-b", "b12", "-m", "x/a.manifest.xml"],
        r"--manifest: .*no '/'",
        id="down-m-slash",
    ),
    pytest.param("download", ["-b", "b12", "-p", "../a"], r"--prefix: .*no '/'", id="down-p-slash"),
    pytest.param("download", ["-b", "b12", "-p", ".."], r"--prefix", id="down-p-dotdot"),
    pytest.param(
        "download",
        ["-b", "b12", "-k", "{missing}"],
        r"--privatekey: .*no such file",
        id="down-k-exists",
    ),
    pytest.param("download", ["-b", "b12", "--pr", "a"], r"ambiguous option --pr", id="down-pr"),
    pytest.param("delete", ["-b", "b12"], r"give one of --manifest or --prefix", id="del-neither"),
    pytest.param(
        "delete",
        ["-b", "b12", "-m", "{manifest}", "-p", "a"],
        r"--manifest cannot be combined with --prefix",
        id="del-both",
    ),
    pytest.param(
        "delete", ["-p", "a"], r"missing mandatory option --bucket$", id="del-bucket-first"
    ),
    pytest.param("delete", ["-b", "b12", "-p", "a/b"], r"--prefix: .*no '/'", id="del-p-slash"),
    pytest.param("delete", ["-b", "b12", "-m", "{missing}"], r"no such file", id="del-m-exists"),
]


@BOTH
@pytest.mark.parametrize(("command", "argv", "pattern"), REJECTS)
def test_parameter_errors(
    command: str,
    argv: list[str],
    pattern: str,
    style: Style,
    files: dict[str, str],
    calls: Calls,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = run(command, expand(argv, files), style)
    err = capsys.readouterr().err.splitlines()
    assert status == (1 if style is Style.CLASSIC else 2)
    prog = CLASSIC[command] if style is Style.CLASSIC else f"amibundle {command}"
    lead = "ERROR: " if style is Style.CLASSIC else f"{prog}: error: "
    assert err[0].startswith(lead)
    assert re.search(pattern, err[0][len(lead) :]), err[0]
    assert err[-1] == f"Try '{prog} --help'."
    assert calls.made == []


def test_modern_refuses_stray_words_classic_ignores_them(
    files: dict[str, str], calls: Calls, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["download", "-b", "bkt", "extra"]) == 2
    assert calls.made == []
    assert classic_main("ec2-download-bundle", ["-b", "bkt", "extra"]) == 0
    assert "ignoring stray argument 'extra'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["upload", "download", "delete"])
def test_help_skips_the_mandatory_checks(
    command: str, capsys: pytest.CaptureFixture[str], calls: Calls
) -> None:
    assert classic_main(CLASSIC[command], ["--sigv", "9", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {CLASSIC[command]} -b BUCKET[/PREFIX]")
    assert calls.made == []


# -- every classic flag, and the classic abbreviations ------------------------------------------


def _long_flags(parser: OptionParser) -> set[str]:
    return {flag for flag in parser._option_string_actions if flag.startswith("--")}


@pytest.mark.parametrize("command", ["upload", "download", "delete"])
def test_every_classic_flag_and_letter_is_there(command: str) -> None:
    module = MODULES[command]
    parser = module.build_parser(Style.CLASSIC, CLASSIC[command])
    assert set(module.CLASSIC_LONGS) <= _long_flags(parser)
    help_text = parser.format_help()
    for flag in module.CLASSIC_LONGS:
        assert re.search(rf"{flag}\b", help_text), flag
    shorts = {
        "upload": "-b -a -s -t -m -d -h",
        "download": "-b -a -s -t -k -m -p -d -h",
        "delete": "-b -a -s -t -m -p -y -h",
    }[command].split()
    for letter in shorts:
        assert letter in parser._option_string_actions, letter


@pytest.mark.parametrize("command", ["upload", "download", "delete"])
def test_classic_abbreviations_keep_their_meaning(command: str) -> None:
    """Every prefix that named one classic option still names it, though we added
    options (``--pr`` meant --prefix to ec2-delete-bundle before --profile came)."""
    module = MODULES[command]
    classic: tuple[str, ...] = module.CLASSIC_LONGS
    parser = module.build_parser(Style.CLASSIC, CLASSIC[command])
    checked = 0
    for long in classic:
        for end in range(3, len(long) + 1):
            prefix = long[:end]
            if prefix not in classic and sum(c.startswith(prefix) for c in classic) != 1:
                continue  # ambiguous in the classic tool too
            action, _flag = parser._resolve_long(prefix)
            assert action.dest == parser._option_string_actions[long].dest, prefix
            checked += 1
    assert checked > 50
    # The aliases stay out of the help.
    assert not re.search(r"--pr[ ,]|--p[ ,]", parser.format_help())


def test_delete_pr_still_means_prefix(files: dict[str, str], calls: Calls) -> None:
    assert classic_main("ec2-delete-bundle", ["-b", "bkt", "--pr", "img", "-y"]) == 0
    assert calls.only[2]["prefix"] == "img"
    assert classic_main("ec2-upload-bundle", [*expand(UP, files), "--p", "4"]) == 0
    assert calls.made[-1][2]["first_part"] == 4


def test_modern_verbs_have_no_hidden_aliases() -> None:
    parser = delete_cli.build_parser(Style.MODERN, "amibundle delete")
    with pytest.raises(Exception, match="ambiguous option --pr"):
        parse_args(parser, ["-b", "bkt", "--pr", "x"])


def test_registered_as_verbs_and_classic_tools() -> None:
    import amibundle.cli as cli

    for command, module in MODULES.items():
        assert cli.command_module(COMMANDS[command]) is module
        assert cli.command_module(CLASSIC_TOOLS[CLASSIC[command]]) is module
        entry = getattr(cli, CLASSIC[command].replace("-", "_"))
        assert callable(entry)


# -- upload behaviour around the call ----------------------------------------------------------


def test_upload_summary_line(
    files: dict[str, str], calls: Calls, capsys: pytest.CaptureFixture[str]
) -> None:
    assert classic_main("ec2-upload-bundle", expand(UP, files)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"Uploading {files['manifest']} to s3://bkt/imgs/")
    assert "Created bucket bkt in us-east-1" in out
    assert re.fullmatch(
        # one part, singular; 12 KiB is too little for a rate to mean anything
        r"Upload complete: 1 part uploaded, 1 already there, 12\.1 KiB in 0\.5 s; "
        r"manifest at s3://bkt/imgs/img\.manifest\.xml",
        out[-1],
    ), out[-1]


def test_upload_json_is_the_only_stdout(
    files: dict[str, str], calls: Calls, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    assert main(["upload", *expand(UP, files), "--json", "--region", "eu-west-1"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["bytes_uploaded"] == 12345
    assert data["keys_uploaded"] == ["imgs/a.part.0", "imgs/img.manifest.xml"]


def test_upload_region_note(
    files: dict[str, str], calls: Calls, capsys: pytest.CaptureFixture[str]
) -> None:
    assert classic_main("ec2-upload-bundle", [*expand(UP, files), "--region", "eu-west-1"]) == 0
    assert "bucket location derived from --region: eu-west-1" in capsys.readouterr().err
    # The library derives it itself; the command does not pass it as a location.
    assert calls.only[2]["location"] is None


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("images", True),
        ("my.images-2024", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("old_bucket", False),
        ("Images", False),
        ("ends-", False),
        ("a-.b", False),
        ("a.-b", False),
        ("192.168.1.1", False),
        ("ab", False),
    ],
)
def test_v2_safe_names(name: str, safe: bool) -> None:
    assert is_v2_safe(name) is safe


def test_unsafe_bucket_name_warns_and_batch_goes_on(
    files: dict[str, str], calls: Calls, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["-b", "Old_Bucket", "-m", files["manifest"]]
    assert classic_main("ec2-upload-bundle", [*argv, "--batch"]) == 0
    assert "bucket name 'Old_Bucket' is not valid in most regions" in capsys.readouterr().err
    assert len(calls.made) == 1


@pytest.mark.parametrize(
    ("answer", "status", "uploaded"),
    [("n\n", 8, 0), ("", 8, 0), ("\n", 8, 0), ("y\n", 0, 1), ("Yes\n", 0, 1)],
)
def test_unsafe_bucket_name_asks_and_reads_stdin(
    answer: str,
    status: int,
    uploaded: int,
    files: dict[str, str],
    calls: Calls,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """stdin is read whether or not it is a terminal (``echo n | ec2-upload-bundle``
    stops); end of input is no."""
    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    argv = ["-b", "Old_Bucket", "-m", files["manifest"]]
    assert classic_main("ec2-upload-bundle", argv) == status
    assert len(calls.made) == uploaded


# -- exit codes of library errors ---------------------------------------------------------------

ERRORS: list[Any] = [
    pytest.param(s3.S3Error("cannot upload x: AccessDenied (403)"), 3, 1, id="s3"),
    pytest.param(s3.NoSuchBucketError("bucket nope does not exist"), 3, 1, id="no-bucket"),
    pytest.param(s3.S3CredentialsError("refused"), 3, 1, id="credentials"),
    pytest.param(s3.LocationMismatchError("bucket b is in EU, not US"), 10, 1, id="location"),
    pytest.param(s3.AclsDisabledError("ACLs off", hint="run 'aws s3api ...'"), 3, 1, id="acls"),
    pytest.param(KeyboardInterrupt(), 255, 130, id="ctrl-c"),
]


@pytest.mark.parametrize("command", ["upload", "download", "delete"])
@pytest.mark.parametrize(("error", "classic", "modern"), ERRORS)
def test_library_errors_exit_codes(
    command: str,
    error: BaseException,
    classic: int,
    modern: int,
    files: dict[str, str],
    calls: Calls,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = {
        "upload": expand(UP, files),
        "download": ["-b", "bkt"],
        "delete": ["-b", "bkt", "-p", "a"],
    }
    calls.raises = error
    assert run(command, argv[command], Style.CLASSIC) == classic
    err = capsys.readouterr().err.splitlines()
    if isinstance(error, KeyboardInterrupt):
        assert err == [f"{CLASSIC[command]}: interrupted"]
    else:
        assert err[0] == f"ERROR: {error}"
        assert err[1:] == ([f"hint: {error.hint}"] if getattr(error, "hint", None) else [])
    assert run(command, argv[command], Style.MODERN) == modern


# -- delete: the question -------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize(
    ("answer", "status", "deleted"),
    [
        pytest.param("n\n", 8, False, id="no"),
        pytest.param("\n", 8, False, id="empty"),
        pytest.param("", 8, False, id="eof"),
        pytest.param("nope, yes\n", 8, False, id="yes-later-in-line"),
        pytest.param("y\n", 0, True, id="y"),
        pytest.param("YES\n", 0, True, id="YES"),
    ],
)
def test_delete_asks_and_only_yes_deletes(
    answer: str,
    status: int,
    deleted: bool,
    style: Style,
    calls: Calls,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    assert run("delete", ["-b", "bkt/p", "-p", "a", "--clear"], style) == status
    out = capsys.readouterr()
    assert (
        "To delete from bucket bkt:\n  p/a.manifest.xml\n  p/a.part.0\ncontinue? [y/N]: " in out.out
    )
    assert bool(calls.deleted) is deleted
    if not deleted:
        assert "nothing deleted" in out.err


@pytest.mark.parametrize("flag", ["-y", "--yes", "--batch", "--bat"])
def test_delete_yes_and_batch_do_not_ask(
    flag: str, calls: Calls, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))  # must not be read
    assert classic_main("ec2-delete-bundle", ["-b", "bkt/p", "-p", "a", flag]) == 0
    out = capsys.readouterr().out
    assert "continue?" not in out
    assert "  p/a.part.0" in out
    assert out.splitlines()[-1] == "Deleted 2 objects from s3://bkt/p/"
    assert calls.deleted == ["p/a.manifest.xml", "p/a.part.0"]


def test_delete_json_keeps_stdout_for_json(
    calls: Calls, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    assert main(["delete", "-b", "bkt/p", "-p", "a", "-y", "--clear", "--json"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["deleted"] == ["p/a.manifest.xml", "p/a.part.0"] and data["bucket_removed"]
    assert "p/a.part.0" in captured.err


def test_delete_declined_result_also_exits_8(calls: Calls, monkeypatch: pytest.MonkeyPatch) -> None:
    """Should the library swallow the callback's refusal and return ``declined``."""

    def returns_declined(*args: Any, **kwargs: Any) -> s3.DeleteResult:
        return s3.DeleteResult(
            bucket=s3.BucketRef("bkt"),
            manifest_key="a.manifest.xml",
            keys=("a.manifest.xml",),
            deleted=(),
            declined=True,
            bucket_removed=False,
            seconds=0.0,
        )

    monkeypatch.setattr(s3, "delete_bundle", returns_declined)
    assert classic_main("ec2-delete-bundle", ["-b", "bkt", "-p", "a", "-y"]) == 8


def test_delete_callback_raises_declined_before_the_library_deletes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = s3.BucketRef("bkt", "")
    out = io.StringIO()
    confirm = delete_cli.ask_before_deleting(bucket, ask=False, out=out)
    assert confirm(["a"]) is True
    assert out.getvalue() == "To delete from bucket bkt:\n  a\n"
    monkeypatch.setattr("sys.stdin", io.StringIO("no\n"))
    with pytest.raises(DeclinedError):
        delete_cli.ask_before_deleting(bucket, ask=True, out=io.StringIO())(["a"])


def test_download_summary(
    files: dict[str, str], calls: Calls, capsys: pytest.CaptureFixture[str]
) -> None:
    assert classic_main("ec2-download-bundle", ["-b", "bkt/x", "-p", "r", "-d", files["dir"]]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"Downloading s3://bkt/x/r.manifest.xml into {files['dir']} ..."
    assert out[-1].startswith(
        "Download complete: 2 parts downloaded, 0 already there, 999 B in 0.2 s"
    )
    assert out[-1].endswith(f"manifest {files['dir']}/r.manifest.xml")
