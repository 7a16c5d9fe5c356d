"""The EC2 instance metadata service, for bundle-vol's inherited manifest fields.

bundle-vol copies the kernel, ramdisk, product codes, block-device mapping and
ancestry of the instance it runs on into the new manifest (``classic-cli.md``
§3.9). The classic tools spoke IMDSv1 only; instances that require tokens
(the default for new ones) answer that with 401. Here, as in boto3, a session
token is asked for first (IMDSv2: ``PUT /latest/api/token``) and sent with
every request; a service that does not know tokens (404/405 on the PUT) is
then read without one (IMDSv1).

The endpoint is ``$AWS_EC2_METADATA_SERVICE_ENDPOINT`` or
``http://169.254.169.254``; ``$AWS_EC2_METADATA_DISABLED=true`` turns the
service off, both as in boto3. Timeouts are short (1 s): off EC2 the address
does not answer and the caller should learn that quickly. Proxies are never
used for it.
"""

from __future__ import annotations

import http.client
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass

from amibundle.errors import MetadataUnavailable

__all__ = [
    "DEFAULT_ENDPOINT",
    "InstanceMetadata",
    "MetadataClient",
    "MetadataUnavailable",
    "endpoint_from_environment",
]

log = logging.getLogger("amibundle.volume.imds")

DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_TTL_SECONDS = 21600
DEFAULT_TIMEOUT = 1.0
_TOKEN_PATH = "/latest/api/token"
_META = "/latest/meta-data/"
# Status codes with which a service that has no token API answers the PUT.
_NO_TOKEN_API = (403, 404, 405)
_MAX_BODY = 1 << 20


@dataclass(frozen=True)
class InstanceMetadata:
    """What bundle-vol inherits from the instance. ``missing`` lists the keys
    the service did not have (a note each, as in the classic tool)."""

    kernel_id: str | None
    ramdisk_id: str | None
    product_codes: tuple[str, ...]
    block_device_mapping: tuple[tuple[str, str], ...]  # (virtual name, device)
    ancestor_ami_ids: tuple[str, ...]
    ami_id: str | None
    missing: tuple[str, ...] = ()

    @property
    def ancestry(self) -> tuple[str, ...]:
        """The ancestors, then this instance's own AMI unless already listed."""
        ids = list(self.ancestor_ami_ids)
        if self.ami_id and self.ami_id not in ids:
            ids.append(self.ami_id)
        return tuple(ids)


def endpoint_from_environment() -> str:
    return os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or DEFAULT_ENDPOINT


class MetadataClient:
    """A small IMDS client: token first, then plain GETs, no retries."""

    def __init__(self, endpoint: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.endpoint = (endpoint or endpoint_from_environment()).rstrip("/")
        self.timeout = timeout
        # IMDS is link-local: an HTTP proxy from the environment must not see it.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._token: str | None = None
        self._token_checked = False

    # -- public --------------------------------------------------------------------

    def check(self) -> None:
        """Raises MetadataUnavailable unless the service answers."""
        if os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
            raise MetadataUnavailable(
                "the instance metadata service is disabled ($AWS_EC2_METADATA_DISABLED)"
            )
        if self.get("") is None:
            raise MetadataUnavailable(
                f"the instance metadata service at {self.endpoint} has no metadata"
            )

    def get(self, key: str) -> str | None:
        """The text of ``/latest/meta-data/<key>``, or None when the key does not exist."""
        token = self._session_token()
        status, body = self._request("GET", _META + key, self._token_headers(token))
        if status == 401 and token is not None:
            # The token expired (long runs): fetch a new one once.
            self._token_checked = False
            token = self._session_token()
            status, body = self._request("GET", _META + key, self._token_headers(token))
        if status == 404:
            return None
        if status != 200:
            raise MetadataUnavailable(
                f"the instance metadata service answered {status} for {key or 'its index'}"
            )
        return body

    def inherited(self) -> InstanceMetadata:
        """Reads every field bundle-vol inherits (missing keys are noted, not fatal)."""
        missing: list[str] = []

        def text(key: str) -> str | None:
            value = self.get(key)
            if value is None:
                missing.append(key)
                return None
            return value.strip() or None

        kernel = text("kernel-id")
        ramdisk = text("ramdisk-id")
        codes = _lines(text("product-codes"))
        names = [name.rstrip("/") for name in _lines(text("block-device-mapping/"))]
        mapping: list[tuple[str, str]] = []
        for name in names:
            device = text(f"block-device-mapping/{name}")
            if device:
                mapping.append((name, device))
        ancestors = _lines(text("ancestor-ami-ids"))
        ami = text("ami-id")
        return InstanceMetadata(
            kernel_id=kernel,
            ramdisk_id=ramdisk,
            product_codes=codes,
            block_device_mapping=tuple(mapping),
            ancestor_ami_ids=ancestors,
            ami_id=ami,
            missing=tuple(missing),
        )

    # -- HTTP ------------------------------------------------------------------------

    def _session_token(self) -> str | None:
        """An IMDSv2 token, or None when the service only speaks IMDSv1."""
        if self._token_checked:
            return self._token
        status, body = self._request(
            "PUT", _TOKEN_PATH, {"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)}
        )
        if status == 200 and body.strip():
            self._token = body.strip()
        elif status in _NO_TOKEN_API:
            log.debug("metadata service has no token API (HTTP %d); using IMDSv1", status)
            self._token = None
        else:
            raise MetadataUnavailable(
                f"the instance metadata service at {self.endpoint} refused a session token "
                f"(HTTP {status})"
            )
        self._token_checked = True
        return self._token

    @staticmethod
    def _token_headers(token: str | None) -> dict[str, str]:
        return {"X-aws-ec2-metadata-token": token} if token else {}

    def _request(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
        request = urllib.request.Request(
            self.endpoint + path,
            method=method,
            headers=headers,
            data=b"" if method == "PUT" else None,
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.status, _read_text(response)
        except urllib.error.HTTPError as err:
            err.close()
            return err.code, ""
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise MetadataUnavailable(
                f"the instance metadata service at {self.endpoint} cannot be reached ({reason})",
                hint="not on EC2? bundle with {off}",
                param="inherit",
            ) from None


def _read_text(response: http.client.HTTPResponse) -> str:
    data: bytes = response.read(_MAX_BODY)
    return data.decode("utf-8", "replace")


def _lines(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(line.strip() for line in text.splitlines() if line.strip())
