"""Service identity, pure: one key per service across pipelines, Dynatrace entities, ServiceNow CIs and
the Backstage catalog.

A `ServiceMap` lists services (`service`, `squad`, `component`, `aliases`). Every alias (and the
service key itself) resolves case-insensitively to the service key; an unknown name stays as sent.
Sources, in precedence order: the `DORA_SERVICE_MAP` setting (JSON, or a path to a .json/.csv file),
a CSV loaded with `dora services load`, and Backstage catalog components (`dora services sync-catalog`).

CSV columns: `service,squad,component,aliases` with aliases separated by `;`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import BadInputError, SettingsError

# Backstage annotations that name the same service in other tools
BACKSTAGE_ALIAS_ANNOTATIONS = (
    "dynatrace.com/dynatrace-entity-id",
    "dev.azure.com/build-definition",
    "dev.azure.com/project-repo",
    "servicenow.com/business-service",
    "valueflow.dev/aliases",
)


@dataclass(frozen=True)
class ServiceEntry:
    service: str
    squad: str = ""
    component: str = ""
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServiceMap:
    entries: tuple[ServiceEntry, ...] = ()
    _alias: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, entries: Iterable[ServiceEntry]) -> ServiceMap:
        """The map; an earlier entry wins an alias claimed twice."""
        listed: dict[str, ServiceEntry] = {}
        alias: dict[str, str] = {}
        for e in entries:
            if e.service in listed:
                continue
            listed[e.service] = e
            for name in (e.service, *e.aliases):
                alias.setdefault(name.strip().lower(), e.service)
        return cls(tuple(listed.values()), alias)

    @classmethod
    def from_rows(cls, services: list[dict[str, Any]], aliases: list[dict[str, Any]]) -> ServiceMap:
        by_service: dict[str, list[str]] = {}
        for a in aliases:
            by_service.setdefault(a["SERVICE"], []).append(a["ALIAS"])
        return cls.of(
            ServiceEntry(
                r["SERVICE"], r.get("SQUAD") or "", r.get("COMPONENT") or "", tuple(by_service.get(r["SERVICE"], ()))
            )
            for r in services
        )

    def resolve(self, name: str) -> str:
        """The service key for any name a source uses (unknown names stay as they are)."""
        return self._alias.get(name.strip().lower(), name.strip())

    def squad_of(self, service: str) -> str:
        entry = self.entry(service)
        return entry.squad if entry else ""

    def entry(self, service: str) -> ServiceEntry | None:
        key = self.resolve(service)
        return next((e for e in self.entries if e.service == key), None)

    def services_of_component(self, component: str) -> list[str]:
        wanted = component.strip().lower()
        return [e.service for e in self.entries if (e.component or e.service).lower() == wanted]

    def squads(self) -> list[str]:
        return sorted({e.squad for e in self.entries if e.squad})


def _entry(doc: Any, where: str) -> ServiceEntry:
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: expected an object with service, squad, component, aliases")
    service = doc.get("service")
    if not isinstance(service, str) or not service.strip():
        raise ValueError(f"{where}.service: required (the service key)")
    aliases = doc.get("aliases") or []
    if isinstance(aliases, str):
        aliases = [a for a in aliases.replace(",", ";").split(";")]
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise ValueError(f"{where}.aliases: expected a list of names")
    for name in ("squad", "component"):
        if doc.get(name) is not None and not isinstance(doc.get(name), str):
            raise ValueError(f"{where}.{name}: expected a string")
    return ServiceEntry(
        service.strip(),
        str(doc.get("squad") or "").strip().lower(),
        str(doc.get("component") or "").strip(),
        tuple(a.strip() for a in aliases if a.strip()),
    )


def parse_service_map_json(text: str, origin: str = "DORA_SERVICE_MAP") -> ServiceMap:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{origin}: not valid JSON ({exc})") from None
    if isinstance(doc, dict) and "services" in doc:
        doc = doc["services"]
    if not isinstance(doc, list):
        raise ValueError(f'{origin}: expected a list of services or {{"services": [...]}}')
    return ServiceMap.of(_entry(d, f"{origin}[{i}]") for i, d in enumerate(doc))


def parse_service_map_csv(text: str, origin: str = "CSV") -> ServiceMap:
    reader = csv.DictReader(io.StringIO(text))
    columns = {c.strip().lower() for c in reader.fieldnames or []}
    if "service" not in columns:
        raise ValueError(f"{origin}: needs a header with at least 'service' (service,squad,component,aliases)")
    entries = []
    for i, row in enumerate(reader, start=2):
        clean = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        if not clean.get("service"):
            raise ValueError(f"{origin} line {i}: empty service")
        entries.append(_entry(clean, f"{origin} line {i}"))
    return ServiceMap.of(entries)


def load_service_map_setting(value: str) -> ServiceMap:
    """`DORA_SERVICE_MAP`: inline JSON, or a path to a .json or .csv file; SettingsError names the problem."""
    text = value.strip()
    if not text:
        return ServiceMap()
    try:
        if text.startswith("[") or text.startswith("{"):
            return parse_service_map_json(text)
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"DORA_SERVICE_MAP: {text!r} is neither JSON nor an existing file")
        body = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".csv":
            return parse_service_map_csv(body, str(path))
        return parse_service_map_json(body, str(path))
    except ValueError as exc:
        raise SettingsError(str(exc), errors=[{"setting": "DORA_SERVICE_MAP", "problem": str(exc)}]) from None


def from_backstage_entities(entities: Iterable[dict[str, Any]]) -> ServiceMap:
    """Components of the Backstage catalog as services: name, owner (squad) and alias annotations."""
    entries = []
    for entity in entities:
        if str(entity.get("kind", "")).lower() != "component":
            continue
        meta = entity.get("metadata") or {}
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            continue
        owner = str((entity.get("spec") or {}).get("owner") or "")
        squad = owner.split(":", 1)[-1].split("/", 1)[-1].lower()
        annotations = meta.get("annotations") or {}
        aliases: list[str] = []
        for key in BACKSTAGE_ALIAS_ANNOTATIONS:
            value = annotations.get(key)
            if isinstance(value, str) and value.strip():
                parts = [p.strip() for p in value.replace(";", ",").split(",") if p.strip()]
                if key == "dev.azure.com/project-repo":
                    parts = [p.split("/", 1)[-1] for p in parts]  # <project>/<repo>: the repository name
                aliases.extend(parts)
        entries.append(ServiceEntry(name, squad, name, tuple(aliases)))
    return ServiceMap.of(entries)


def require_entity_ref(ref: str | None) -> str:
    """The component name of `component:default/<name>` (also `component:<name>` or `<name>`)."""
    if not ref or not ref.strip():
        raise BadInputError("entityRef: required, e.g. component:default/checkout")
    text = ref.strip()
    kind, sep, rest = text.partition(":")
    if sep and kind.lower() != "component":
        raise BadInputError(f"entityRef: {text!r} is a {kind}; the scorecard is for components")
    name = (rest if sep else text).split("/")[-1].strip()
    if not name:
        raise BadInputError(f"entityRef: {text!r} has no component name")
    return name
