"""What the local host knows of an app: its functions, read from `app.get_functions()`.

Adding a blueprint function needs no change here: every trigger type the host supports is read
from the function's own trigger binding.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SUPPORTED = {"httpTrigger", "eventGridTrigger", "timerTrigger", "queueTrigger"}


@dataclass(frozen=True)
class RouteTemplate:
    """A Functions route template (`anomalies/{id}/feedback`, `{id:int}`, `{name?}`) compiled to a regex."""

    template: str
    pattern: re.Pattern[str]
    params: tuple[str, ...]

    @classmethod
    def compile(cls, template: str) -> RouteTemplate:
        parts = []
        names = []
        for segment in template.strip("/").split("/"):
            m = re.fullmatch(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?(\?)?\}", segment)
            if not m:
                parts.append("/" + re.escape(segment))
                continue
            catch_all, name, constraint, optional = m.groups()
            names.append(name)
            body = {"int": r"-?\d+", "guid": r"[0-9a-fA-F-]{36}", "alpha": r"[A-Za-z]+"}.get(constraint or "", r"[^/]+")
            if catch_all:
                body = r".*"
            group = f"/(?P<{name}>{body})"
            parts.append(f"(?:{group})?" if optional else group)
        return cls(template, re.compile("^" + "".join(parts) + "/?$", re.IGNORECASE), tuple(names))

    def match(self, path: str) -> dict[str, str] | None:
        m = self.pattern.match("/" + path.strip("/") if path.strip("/") else "")
        if not m:
            return None
        return {k: v for k, v in m.groupdict().items() if v is not None}


@dataclass
class FunctionInfo:
    name: str
    trigger_type: str
    arg_name: str
    user_function: Callable[..., Any]
    binding: dict[str, Any] = field(default_factory=dict)
    route: RouteTemplate | None = None
    methods: tuple[str, ...] = ()
    auth_level: str = "function"

    @property
    def is_http(self) -> bool:
        return self.trigger_type == "httpTrigger"


_built: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()


def list_functions(app: Any) -> list[Any]:
    """`app.get_functions()`, built once per app: a second call raises a duplicate-name error in azure-functions."""
    if app not in _built:
        _built[app] = app.get_functions()
    return _built[app]


def index_app(app: Any) -> dict[str, FunctionInfo]:
    """Every function of an azure.functions app, by name (case-insensitive lookups use `.lower()`)."""
    out: dict[str, FunctionInfo] = {}
    for fn in list_functions(app):
        trigger = fn.get_trigger()
        ttype = trigger.get_binding_name()
        binding = {k: v for k, v in vars(trigger).items() if not k.startswith("_") and k != "init_params"}
        info = FunctionInfo(
            name=fn.get_function_name(),
            trigger_type=ttype,
            arg_name=trigger.name,
            user_function=fn.get_user_function(),
            binding=binding,
        )
        if ttype == "httpTrigger":
            route = binding.get("route") or info.name
            info.route = RouteTemplate.compile(route)
            methods = binding.get("methods") or ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
            info.methods = tuple(str(getattr(m, "value", m)).upper() for m in methods)
            level = binding.get("auth_level")
            info.auth_level = str(getattr(level, "value", level or "function")).lower()
        out[info.name] = info
    return out


def find_function(functions: dict[str, FunctionInfo], name: str) -> FunctionInfo | None:
    """Function names are case-insensitive in the Functions host."""
    lowered = name.lower()
    for key, info in functions.items():
        if key.lower() == lowered:
            return info
    return None
