"""Outbound URL safety: is this URL (from a caller or from configuration) allowed to be called?

One rule for every URL the app calls that it did not build itself (Logic App `callbackUrl`s, Teams
webhooks): the URL is checked with the parser that sends it (urllib3's `parse_url`, which requests
uses), and again against the host of the request requests actually prepares, so a parser
differential (`https://evil.example\\.logic.azure.com/`, where `urlsplit` sees one host and urllib3
another) cannot pass. A host is accepted only when written plainly:
- ASCII `[a-z0-9.-]` labels (no `\\`, `%`, `@`, whitespace, `;`, `,`, `*`, no IDN/fullwidth
  characters: write punycode), no empty label (so no trailing dot), at most 253 characters;
- an IP address only in canonical form (`10.0.0.1`, `[::1]`) and only when listed verbatim, never
  through a wildcard; a name whose last label is numeric (`2130706433`, `0x7f.1`, `127.1`) is an IP
  address to resolvers, so it is refused;
- https, or plain http for a loopback host (127.0.0.0/8, ::1, `localhost`) that may be called;
- no user:password, no fragment.
`pinned_session()` adds the network half: the address a connection actually reaches must be a public
one unless the host is listed verbatim, which also defeats DNS rebinding (checked per connection,
after resolution, before a byte is sent).

Pure apart from `pinned_session()`; no I/O at import.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MAX_URL_LENGTH = 4096
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_HOST_CHARS = re.compile(r"^[a-z0-9.-]+$")
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
# a forbidden character anywhere in the URL: whitespace, controls, backslash (a path separator to
# browsers and WHATWG parsers, a host character to urlsplit)
_BAD_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


@dataclass(frozen=True)
class OutboundUrl:
    """A URL that passed the checks: what will be connected to."""

    url: str
    scheme: str
    host: str  # lower case; IPv6 without brackets
    port: int


def is_loopback_host(host: str | None) -> bool:
    """True for `localhost` and literal loopback addresses (127.0.0.0/8, ::1), nothing else.

    Only canonical IP literals count: `127.attacker.example`, `127.1` or `0x7f000001` are not loopback."""
    if not host:
        return False
    name = host.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def host_problem(host: str) -> str | None:
    """Why `host` (lower case, IPv6 without brackets) is not a plainly written host name, or None."""
    if not host:
        return "has no host"
    if _ip(host) is not None:
        return None  # a canonical IP literal: allowed only when listed verbatim (see host_allowed)
    if len(host) > 253:
        return "host name is longer than 253 characters"
    if not _HOST_CHARS.match(host):
        return "host name may contain only a-z, 0-9, '.' and '-'"
    labels = host.split(".")
    if any(not label for label in labels):
        return "host name has an empty label (leading, trailing or doubled dot)"
    if any(not _LABEL.match(label) for label in labels):
        return "host name has a label that is not 1-63 letters, digits or inner hyphens"
    if _NUMERIC_LABEL.match(labels[-1]):
        return "host looks like a non-canonical IP address; write it as a.b.c.d"
    return None


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    """True when `host` matches an allow-list pattern (`*.logic.azure.com`, case-insensitive).

    IP literals and loopback names match only a pattern equal to them (`127.0.0.1`, `[::1]`,
    `localhost`), never a wildcard."""
    host = host.lower()
    listed = {p.strip().lower() for p in patterns if p and p.strip()}
    bare = {p[1:-1] if p.startswith("[") and p.endswith("]") else p for p in listed}
    if _ip(host) is not None or is_loopback_host(host):
        return host in bare
    if host_problem(host):
        return False
    return any(fnmatch.fnmatchcase(host, p) for p in listed if not _ip(p))


def listed_verbatim(host: str, patterns: Iterable[str]) -> bool:
    """True when `host` is itself an entry of the allow-list (not matched through a wildcard)."""
    host = host.lower().strip("[]")
    return any(p.strip().lower().strip("[]") == host for p in patterns if p and p.strip())


def parse_outbound(
    url: Any, allowed_hosts: Iterable[str] | None, *, setting: str, loopback_always: bool = False
) -> OutboundUrl | str:
    """The checked URL, or a string saying why it may not be called (never echoes the URL: it may hold a secret).

    `allowed_hosts=None` checks the shape only (URL settings an operator writes: any plainly written
    host, IP literals included). `setting` names the allow-list in messages. `loopback_always` lets
    loopback hosts through without being listed (Teams routes from configuration: the local fakes);
    a caller-supplied URL never gets it."""
    from urllib.parse import urlsplit

    from urllib3.exceptions import LocationParseError
    from urllib3.util import parse_url

    if not isinstance(url, str) or not url:
        return "must be a non-empty string"
    if len(url) > MAX_URL_LENGTH:
        return f"is longer than {MAX_URL_LENGTH} characters"
    if not url.isascii():
        return "must be ASCII (write an international host name in punycode)"
    if _BAD_URL_CHARS.search(url):
        return "must not contain whitespace, control characters or backslashes"
    try:
        parsed = parse_url(url)
        std = urlsplit(url)
        std_host, std_port = std.hostname, std.port
    except (LocationParseError, ValueError):
        return "not a valid URL"
    scheme = (parsed.scheme or "").lower()
    if scheme not in ("https", "http") or not parsed.host:
        return "must be an absolute https URL"
    if parsed.auth is not None or "@" in (std.netloc or ""):
        return "must not carry credentials (user@ or user:password@)"
    if parsed.fragment is not None or "#" in url:
        return "must not have a fragment"
    host = parsed.host.lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    # the parser that sends and the standard library must see the same host and port
    if (std_host or "").lower() != host or (std_port or None) != (parsed.port or None):
        return "is parsed differently by different URL parsers; refused"
    problem = host_problem(host)
    if problem:
        return problem
    loopback = is_loopback_host(host)
    if scheme == "http" and not loopback:
        return "must use https"
    if allowed_hosts is not None:
        allowed = tuple(allowed_hosts)
        if not (host_allowed(host, allowed) or (loopback_always and loopback)):
            return f"host {host} is not in {setting}"
    port = parsed.port or (443 if scheme == "https" else 80)
    prepared_problem = _prepared_host_problem(url, scheme, host, port)
    if prepared_problem:
        return prepared_problem
    return OutboundUrl(url=url, scheme=scheme, host=host, port=port)


def _prepared_host_problem(url: str, scheme: str, host: str, port: int) -> str | None:
    """Compare with the request requests would send: same scheme, host and port."""
    import requests
    from urllib3.util import parse_url

    try:
        prepared = requests.Request("POST", url).prepare()
        sent = parse_url(prepared.url or "")
    except (requests.RequestException, ValueError):
        return "not a valid URL"
    sent_host = (sent.host or "").lower().strip("[]")
    sent_port = sent.port or (443 if sent.scheme == "https" else 80)
    if (sent.scheme or "").lower() != scheme or sent_host != host or sent_port != port:
        return "the request would go to another host than the URL names; refused"
    return None


def outbound_problem(
    url: Any, allowed_hosts: Iterable[str], *, setting: str, loopback_always: bool = False
) -> str | None:
    """Why this URL may not be called, or None when it may (see `parse_outbound`)."""
    result = parse_outbound(url, allowed_hosts, setting=setting, loopback_always=loopback_always)
    return result if isinstance(result, str) else None


def url_shape_problem(url: Any) -> str | None:
    """Why a configured URL is not plainly written (backslash, userinfo, odd host spelling...), or None."""
    result = parse_outbound(url, None, setting="")
    return result if isinstance(result, str) else None


def redact_url(url: str) -> str:
    """scheme://host/path without userinfo, query or fragment (where SAS signatures live): safe for logs."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
    except ValueError:
        return "<unparseable URL>"
    return f"{parts.scheme}://{host}{parts.path}"


# -- masking secrets in free text (log lines) --

# query parameters that carry a key or a SAS signature: Functions keys, Storage/Logic Apps SAS parts
SECRET_QUERY_PARAMS = (
    "code", "sig", "sv", "se", "sp", "st", "skoid", "sktid", "skt", "ske", "sks", "skv",
    "api-key", "apikey", "access_token", "token",
)  # fmt: skip
# only in a query context: after `?`, `&` or `;`, also percent-encoded (a URL inside a URL)
_SECRET_PARAM = re.compile(
    r"(?i)((?:[?&;]|%3f|%26)(?:" + "|".join(re.escape(p) for p in SECRET_QUERY_PARAMS) + r"))(=|%3d)([^&\s\"'#]*)"
)


def mask_secrets(text: str) -> str:
    """`text` with the values of key and SAS query parameters (`code=`, `sig=`, `sv=`, ...) replaced by `***`."""
    if not text or ("=" not in text and "%3" not in text.lower()):
        return text
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)


# -- the network half: refuse private addresses per connection --


def is_public_address(address: str) -> bool:
    """True for a globally routable unicast address (IPv4-mapped IPv6 judged by its IPv4 address)."""
    ip = _ip(address.split("%", 1)[0])
    if ip is None:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    return bool(ip.is_global and not ip.is_multicast)


def pinned_session(allowed_hosts: Iterable[str], *, loopback_always: bool = False) -> Any:
    """A requests.Session whose connections refuse to reach a non-public address (private, loopback,
    link-local, reserved) unless the host is listed verbatim in `allowed_hosts` (or is loopback and
    `loopback_always`). The check runs on the connected socket's peer address, so a name that
    resolves (or re-resolves) to 169.254.169.254 or 10.x is refused before anything is sent.
    Raises `shared.errors.ForbiddenActionError` from the send."""
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    from shared.adapters.http import PooledSession
    from shared.errors import ForbiddenActionError

    verbatim = tuple(allowed_hosts)

    class _Checked:
        host: str

        def _new_conn(self) -> Any:
            sock = super()._new_conn()  # type: ignore[misc]
            name = (self.host or "").lower().strip("[]")
            if listed_verbatim(name, verbatim) or (loopback_always and is_loopback_host(name)):
                return sock
            try:
                peer = sock.getpeername()[0]
            except OSError:
                peer = ""
            if not is_public_address(str(peer)):
                sock.close()
                raise ForbiddenActionError(
                    f"refusing to connect to {name}: it resolves to a non-public address ({peer or 'unknown'}); "
                    "list the host verbatim in the allow-list to allow it"
                )
            return sock

    class _HTTP(_Checked, HTTPConnection):
        pass

    class _HTTPS(_Checked, HTTPSConnection):
        pass

    class _HTTPPool(HTTPConnectionPool):
        ConnectionCls = _HTTP

    class _HTTPSPool(HTTPSConnectionPool):
        ConnectionCls = _HTTPS

    class _Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    # pooled and without per-request environment lookups, as every other adapter's session
    return PooledSession(adapter_class=_Adapter)


class SecretMaskingFilter:
    """A logging filter (on a handler) masking key and SAS query parameters in every record's message,
    whoever logged it: access lines, urllib3 debug lines, exception texts that quote a URL."""

    def filter(self, record: Any) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the logging module's problem, not ours
            return True
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            import logging

            record.exc_text = mask_secrets(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        return True
