"""Every shell and Python example of README.md runs, top to bottom, so the README
cannot drift from the code.

The blocks run in order in one temporary folder (a later example may use what an
earlier one made, as a reader following along would), with the venv's commands
on PATH, a fresh HOME, no EC2 certificate but the shipped ones, and moto standing
in for AWS: boto3 finds it through AWS_ENDPOINT_URL, and the README's sample
S3-compatible endpoint (http://127.0.0.1:8333) is pointed at it too. moto takes
any credentials, so the README's placeholders (AKIA..., ...) work as written.
Blocks marked ``<!-- not run: reason -->`` are reported as skipped with their
reason. Other documents with examples can be added to DOCUMENTS.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.aws import AwsStandIn
from tests.support.common import REPO
from tests.support.readme import Block, ReadmeError, examples

DOCUMENTS = [REPO / "README.md"]
SAMPLE_ENDPOINT = "http://127.0.0.1:8333"  # the README's S3-compatible server
BLOCK_TIMEOUT = 240
_ALL = [(doc, block) for doc in DOCUMENTS for block in examples(doc.read_text())]
_failed: dict[Path, int] = {}  # document -> line of its first failed block


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("readme")


@pytest.fixture(scope="module")
def environment(workspace: Path, aws_session: AwsStandIn) -> dict[str, str]:
    aws_session.reset()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "AMIBUNDLE_", "EC2_")) and key != "PYTHONPATH"
    }
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", ""), "/usr/sbin", "/sbin"])
    env["HOME"] = str(workspace / "home")
    (workspace / "home").mkdir()
    env.update(aws_session.environment())
    env["LC_ALL"] = "C.UTF-8"
    return env


def run_block(block: Block, workspace: Path, env: dict[str, str], endpoint: str) -> None:
    code = block.code.replace(SAMPLE_ENDPOINT, endpoint)
    if block.language == "sh":
        argv = ["bash", "-euo", "pipefail", "-c", code]
    else:
        script = workspace / f".example-{block.id}.py"
        script.write_text(code)
        argv = [sys.executable, str(script)]
    done = subprocess.run(
        argv,
        cwd=workspace,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
        pytest.fail(
            f"the {block.language} example at README.md line {block.line} failed "
            f"(exit {done.returncode}):\n{tail}",
            pytrace=False,
        )


@pytest.mark.parametrize(("document", "block"), _ALL, ids=[f"{d.name}:{b.id}" for d, b in _ALL])
def test_example_runs(
    document: Path,
    block: Block,
    workspace: Path,
    environment: dict[str, str],
    aws_session: AwsStandIn,
) -> None:
    if block.skip:
        pytest.skip(f"not run: {block.skip}")
    if document in _failed:
        pytest.skip(f"an earlier example (line {_failed[document]}) failed")
    try:
        run_block(block, workspace, environment, aws_session.endpoint_url)
    except BaseException:
        _failed[document] = block.line
        raise


def test_the_readme_has_examples_of_both_kinds_and_few_skipped() -> None:
    blocks = examples((REPO / "README.md").read_text())
    assert {b.language for b in blocks} == {"sh", "python"}
    skipped = [b for b in blocks if b.skip]
    assert len(skipped) <= len(blocks) // 4, [(b.line, b.skip) for b in skipped]


# --- the extractor ---------------------------------------------------------------------


prose = st.text(st.sampled_from("abc <>-`!:\n"), max_size=40).filter(
    lambda text: "```" not in text and "not run" not in text and "~~~" not in text
)
code = st.text(st.sampled_from("ab$ \n'\"#`"), max_size=30).filter(lambda t: "```" not in t)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            prose, st.sampled_from(["sh", "bash", "python", "py", "text", ""]), code, st.booleans()
        ),
        max_size=6,
    )
)
def test_the_extractor_finds_exactly_the_runnable_blocks(
    parts: list[tuple[str, str, str, bool]],
) -> None:
    lines: list[str] = []
    expected = []
    for text, language, body, skipped in parts:
        lines += text.splitlines()
        runnable = language in ("sh", "bash", "python", "py")
        if skipped and runnable:
            lines += ["", "<!-- not run: a reason -->", ""]
        lines.append(f"```{language}")
        fence_line = len(lines)
        body_lines = body.splitlines()
        lines += body_lines
        lines.append("```")
        if runnable:
            kind = "sh" if language in ("sh", "bash") else "python"
            reason = "a reason" if skipped else None
            expected.append(Block(kind, "\n".join(body_lines) + "\n", fence_line, reason))
    assert examples("\n".join(lines)) == expected


@pytest.mark.parametrize(
    ("markdown", "message"),
    [
        ("<!-- not run: -->\n```sh\ntrue\n```", "needs a reason"),
        ("<!-- not run: why -->\ntext\n```sh\ntrue\n```", "right before"),
        ("<!-- not run: why -->\n```json\n{}\n```", "right before"),
        ("<!-- not run: why -->", "right before"),
        ("```sh\ntrue\n", "never closed"),
    ],
)
def test_misplaced_or_unexplained_skips_are_errors(markdown: str, message: str) -> None:
    with pytest.raises(ReadmeError, match=message):
        examples(markdown)


def test_longer_fences_and_tildes_hold_inner_fences() -> None:
    markdown = "````sh\necho '```'\n````\n~~~python\nprint(1)\n~~~\n"
    assert [(b.language, b.code) for b in examples(markdown)] == [
        ("sh", "echo '```'\n"),
        ("python", "print(1)\n"),
    ]
