"""amibundle.aws: the one wording of AWS failures, per service, and the shared
session and client settings. Messages are checked whole, per service, through
the public wrappers each service module keeps (s3_failure, ec2_failure, ...)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from amibundle import aws, kernel_mapping
from amibundle.ebs import client as ebs_client
from amibundle.ec2 import client as ec2_client
from amibundle.errors import (
    AmibundleError,
    EbsError,
    Ec2CredentialsError,
    Ec2Error,
    MappingUnavailableError,
    NoSuchBucketError,
    S3CredentialsError,
    S3Error,
    UsageError,
)
from amibundle.kernel_mapping import Ec2Access
from amibundle.s3 import client as s3_client
from amibundle.s3.settings import S3Settings

Failure = Callable[[str, Exception, int | None], AmibundleError]


class Case(NamedTuple):
    """What one service's failures must be, written out (not read from its record)."""

    failure: Failure
    errors: Callable[[str], AbstractContextManager[None]]
    service: aws.Service[Any]
    error: type[AmibundleError]
    credentials_error: type[AmibundleError]
    refuser: str  # who "refused the credentials"
    credential_code: str
    denied_code: str
    denied_hint_extra: str  # what the access-denied hint says beyond the common words
    unnamed_endpoint: str


def _conn(attempts: int | None) -> Any:
    """Something with ``.settings.attempts``, as every service's connection has."""

    class Conn:
        settings = S3Settings(attempts=attempts or 1)

    return Conn() if attempts else None


def _mapping_failure(what: str, err: Exception, attempts: int | None) -> AmibundleError:
    return aws.failure(kernel_mapping._MAPPING, what, err, attempts)


CASES = {
    "s3": Case(
        lambda what, err, n: s3_client.s3_failure(what, err, _conn(n)),
        lambda what: s3_client.s3_errors(what),
        s3_client.S3,
        S3Error,
        S3CredentialsError,
        "S3",
        "InvalidAccessKeyId",
        "AccessDenied",
        "",
        "the S3 endpoint",
    ),
    "ec2": Case(
        lambda what, err, n: ec2_client.ec2_failure(what, err, _conn(n)),
        lambda what: ec2_client.ec2_errors(what),
        ec2_client.EC2,
        Ec2Error,
        Ec2CredentialsError,
        "AWS",
        "AuthFailure",
        "UnauthorizedOperation",
        "",
        "the endpoint",
    ),
    "ebs": Case(
        lambda what, err, n: ebs_client.ebs_failure(what, err, _conn(n)),
        lambda what: ebs_client.ebs_errors(what),
        ebs_client.EBS,
        EbsError,
        EbsError,
        "AWS",
        "InvalidSignatureException",
        "AccessDeniedException",
        "ebs:PutSnapshotBlock",
        "the endpoint",
    ),
    "mapping": Case(
        _mapping_failure,
        lambda what: kernel_mapping._ec2_errors(what),
        kernel_mapping._MAPPING,
        MappingUnavailableError,
        MappingUnavailableError,
        "AWS",
        "AuthFailure",
        "UnauthorizedOperation",
        "",
        "the endpoint",
    ),
}
SERVICES = pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())


def refused(
    code: str, status: int, message: str = "", retries: int = 0, **extra: Any
) -> ClientError:
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": retries},
        **extra,
    }
    return ClientError(response, "AnyOperation")


def check(err: AmibundleError, kind: type[AmibundleError], text: str) -> None:
    assert type(err) is kind
    assert str(err) == text and "\n" not in str(err)


# --------------------------------------------------------------------------- refusals


@SERVICES
def test_refused_credentials_are_the_credentials_error_with_the_hint(case: Case) -> None:
    err = case.failure("do x", refused(case.credential_code, 401, "bad\nkey"), None)
    check(
        err,
        case.credentials_error,
        f"cannot do x: {case.refuser} refused the credentials ({case.credential_code} (401): "
        "bad key)",
    )
    assert err.hint and "access key, secret key and session token" in err.hint


@SERVICES
def test_access_denied_is_the_plain_error_with_the_permission_hint(case: Case) -> None:
    err = case.failure("do x", refused(case.denied_code, 403, "Not allowed", retries=2), 3)
    check(err, case.error, f"cannot do x: {case.denied_code} (403) after 3 attempts: Not allowed")
    assert err.hint and err.hint.startswith(
        "the credentials are valid but lack the permission for this request"
    )
    assert case.denied_hint_extra in err.hint


@SERVICES
def test_other_refusals_name_code_status_retries_and_message(case: Case) -> None:
    check(
        case.failure("do x", refused("SlowDown", 503, "Reduce  your\trate", retries=1), None),
        case.error,
        "cannot do x: SlowDown (503) after 2 attempts: Reduce your rate",
    )
    # A message that only repeats the code or status is said once; no code: the status.
    check(
        case.failure("do x", refused("Boom", 500, "Boom"), None),
        case.error,
        "cannot do x: Boom (500)",
    )
    check(case.failure("do x", refused("", 404, "404"), None), case.error, "cannot do x: 404 (404)")
    assert case.failure("do x", refused("Boom", 500), None).hint is None


@SERVICES
def test_a_reason_of_its_own_is_said_after_the_status(case: Case) -> None:
    """EBS's ValidationException carries a Reason (INVALID_BLOCK, ...) beside the message."""
    err = refused("ValidationException", 400, "bad block", Reason="INVALID_BLOCK")
    check(
        case.failure("put block 7", err, None),
        case.error,
        "cannot put block 7: ValidationException (400) INVALID_BLOCK: bad block",
    )


# --------------------------------------------------------------------------- not sent


@SERVICES
def test_no_credentials_is_the_credentials_error_with_where_to_give_them(case: Case) -> None:
    err = case.failure("do x", NoCredentialsError(), 3)
    check(err, case.credentials_error, "cannot do x: no AWS credentials found")
    assert err.hint and "AWS_ACCESS_KEY_ID" in err.hint and "profile" in err.hint


@SERVICES
def test_partial_credentials_are_the_credentials_error(case: Case) -> None:
    err = PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY")
    check(
        case.failure("do x", err, 3),
        case.credentials_error,
        "cannot do x: Partial credentials found in env, missing: AWS_SECRET_ACCESS_KEY",
    )


@SERVICES
def test_unreachable_endpoints_say_how_often_they_were_tried(case: Case) -> None:
    unreachable = EndpointConnectionError(endpoint_url="http://h:1/b")
    check(
        case.failure("do x", unreachable, 1),
        case.error,
        "cannot do x: cannot connect to http://h:1/b (after 1 attempt)",
    )
    check(
        case.failure("do x", unreachable, None),
        case.error,
        "cannot do x: cannot connect to http://h:1/b",
    )
    nameless = EndpointConnectionError(endpoint_url="x")
    nameless.kwargs.pop("endpoint_url")
    check(
        case.failure("do x", nameless, 4),
        case.error,
        f"cannot do x: cannot connect to {case.unnamed_endpoint} (after 4 attempts)",
    )


@SERVICES
def test_other_botocore_errors_are_one_line_with_the_attempts(case: Case) -> None:
    err = case.failure("do x", ReadTimeoutError(endpoint_url="http://h:1/b"), 5)
    check(
        err,
        case.error,
        'cannot do x: Read timeout on endpoint URL: "http://h:1/b" (after 5 attempts)',
    )
    err = case.failure("do x", ConnectTimeoutError(endpoint_url="http://h:1/b"), None)
    assert type(err) is case.error and "Connect timeout" in str(err) and "attempt" not in str(err)


@SERVICES
def test_anything_else_is_its_own_text_or_its_class(case: Case) -> None:
    check(case.failure("do x", ValueError("odd\nthing"), 3), case.error, "cannot do x: odd thing")
    check(case.failure("do x", ValueError(), 3), case.error, "cannot do x: ValueError")


@SERVICES
def test_the_errors_blocks_turn_botocore_exceptions_only(case: Case) -> None:
    expected = pytest.raises(case.error, match=r"^cannot do x: Boom \(500\)$")
    with expected as raised, case.errors("do x"):
        raise refused("Boom", 500)
    assert raised.value.__suppress_context__
    with pytest.raises(case.credentials_error, match="no AWS credentials"), case.errors("do x"):
        raise NoCredentialsError()
    with pytest.raises(KeyError), case.errors("do x"):
        raise KeyError("not botocore's")


def test_s3_keeps_its_missing_bucket() -> None:
    err = s3_client.s3_failure("list b", refused("NoSuchBucket", 404, "gone"))
    check(
        err,
        NoSuchBucketError,
        "cannot list b: the bucket does not exist (NoSuchBucket (404): gone)",
    )
    assert type(aws.failure(s3_client.S3, "list b", refused("NoSuchBucket", 404))) is S3Error


def test_error_codes() -> None:
    assert aws.error_code(refused("Throttling", 400)) == ("Throttling", 400)
    assert aws.error_code(refused("", 503)) == ("503", 503)
    assert aws.error_code(ValueError()) == ("0", 0)
    assert s3_client.error_code(refused("NoSuchKey", 404)) == ("NoSuchKey", 404)
    assert ebs_client.error_code(refused("", 502)) == ("502", 502)
    assert ec2_client.error_code(refused("InvalidAMIID.NotFound", 400)) == "InvalidAMIID.NotFound"


# --------------------------------------------------------------------------- sessions and clients


@pytest.fixture
def no_aws_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_aws_config")
@SERVICES
def test_an_unknown_profile_is_the_services_credentials_error(case: Case) -> None:
    with pytest.raises(case.credentials_error) as raised:
        aws.session_for(S3Settings(profile="nobody"), case.service)
    assert str(raised.value) == "AWS profile 'nobody' is not in the AWS configuration files"


@pytest.mark.usefixtures("no_aws_config")
def test_every_connect_names_an_unknown_profile() -> None:
    settings = S3Settings(profile="nobody")
    with pytest.raises(S3CredentialsError, match="'nobody'"):
        s3_client.connect(settings)
    with pytest.raises(Ec2CredentialsError, match="'nobody'"):
        ec2_client.connect(settings)
    with pytest.raises(EbsError, match="'nobody'"):
        ebs_client.connect(settings)
    with pytest.raises(MappingUnavailableError, match="'nobody'"):
        kernel_mapping._Ec2(Ec2Access(profile="nobody"))


@pytest.mark.usefixtures("no_aws_config")
def test_sessions_take_the_keys_and_share_one_model_loader() -> None:
    first = aws.session_for(S3Settings(access_key="AKID", secret_key="s"), ec2_client.EC2)
    second = aws.session_for(
        Ec2Access(access_key="AK2", secret_key="t", session_token="tok"), ec2_client.EC2
    )
    credentials = second.get_credentials()
    assert (credentials.access_key, credentials.secret_key, credentials.token) == (
        "AK2",
        "t",
        "tok",
    )
    assert first.get_credentials().access_key == "AKID"
    loaders = [s._session.get_component("data_loader") for s in (first, second)]
    assert loaders[0] is loaders[1]


def test_the_region_asked_for(monkeypatch: pytest.MonkeyPatch, no_aws_config: None) -> None:
    session = aws.session_for(S3Settings(), ec2_client.EC2)
    assert aws.region_asked(None, session) is None
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert aws.region_asked(None, session) == "eu-west-1"
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    assert aws.region_asked(None, session) == "ap-south-1"
    assert aws.region_asked("sa-east-1", session) == "sa-east-1"


def test_client_config() -> None:
    config = aws.client_config(4)
    assert config.retries == {"total_max_attempts": 4, "mode": "standard"}
    assert (config.connect_timeout, config.read_timeout) == (aws.CONNECT_TIMEOUT, aws.READ_TIMEOUT)
    assert config.max_pool_connections == 10
    config = aws.client_config(
        1, pool=2, connect_timeout=0.5, read_timeout=0.7, signature_version="s3v4"
    )
    assert (config.max_pool_connections, config.connect_timeout, config.read_timeout) == (
        2,
        0.5,
        0.7,
    )
    assert config.signature_version == "s3v4"


@pytest.mark.usefixtures("no_aws_config")
@pytest.mark.parametrize("service", ["s3", "ec2", "ebs"])
def test_an_unusable_endpoint_is_a_usage_error(service: str) -> None:
    session = aws.session_for(S3Settings(), ec2_client.EC2)
    with pytest.raises(UsageError, match=rf"^invalid {service.upper()} endpoint 'not a url': "):
        aws.make_client(session, service, region="us-east-1", endpoint_url="not a url", config=None)
    client = aws.make_client(
        session, service, region="eu-west-1", endpoint_url="http://127.0.0.1:9", config=None
    )
    assert client.meta.endpoint_url == "http://127.0.0.1:9"
    assert client.meta.region_name == "eu-west-1"
