"""Azure resource ids as URL paths: refuse what would redirect an ARM call, percent-encode the rest.

A resource id reaches ARM calls from data (cost exports, policy events, the approval episode), and
URL parsers remove dot segments: `…/virtualMachines/..` would turn a GET of the VM into a GET of the
provider, and `…/virtualMachines/../deallocate` a POST somewhere else. So a path is accepted only
when every segment is a real name: not empty (`//`, a trailing `/`), not `.` or `..` (also not
percent-encoded, `%2e%2E`), no control characters, `\\`, `?` or `#`. Each segment is then
percent-encoded on its own, so nothing in a name can act as a separator. Pure; no I/O.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from shared.errors import BadInputError

MAX_PATH_LENGTH = 4096
# what a segment may keep as is: RFC 3986 unreserved characters and the sub-delims ARM ids use
SEGMENT_SAFE = "-._~!$&'()*+,=:@"
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\?#]")


def resource_path_problem(path: object) -> str | None:
    """Why `path` (`/subscriptions/…`) may not be used as an ARM URL path, or None."""
    if not isinstance(path, str) or not path:
        return "is empty"
    if len(path) > MAX_PATH_LENGTH:
        return f"is longer than {MAX_PATH_LENGTH} characters"
    if not path.startswith("/"):
        return "must start with '/'"
    if _FORBIDDEN.search(path):
        return "contains a control character, '\\', '?' or '#'"
    for number, segment in enumerate(path[1:].split("/"), start=1):
        if not segment:
            return f"has an empty segment at position {number} ('//' or a trailing '/')"
        if unquote(segment).strip() in (".", ".."):
            return f"has a '.' or '..' segment at position {number}"
    return None


def encode_resource_path(path: str) -> str:
    """The path with each segment percent-encoded; BadInputError naming the problem when it is unsafe."""
    problem = resource_path_problem(path)
    if problem:
        shown = path[:200] if isinstance(path, str) else type(path).__name__
        raise BadInputError(f"resource id {shown!r} {problem}")
    return "/" + "/".join(quote(segment, safe=SEGMENT_SAFE) for segment in path[1:].split("/"))
