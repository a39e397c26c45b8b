"""Review feedback in-process: the signed-in user from App Service Authentication, history never overwritten,
the Logic Apps and CLI paths writing the same history."""

from datetime import date
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
import pytest

from devhost.demo_costs import demo_costs, export_runs
from functions.review import review_feedback
from shared.approvals.anomalies import give_feedback
from shared.costs.feedback import list_episodes
from shared.costs.loader import ingest_paths
from shared.costs.scan import run_daily_scan
from shared.idempotency import TABLE as IDEMPOTENCY
from shared.review.service import episode_detail, review_url
from shared.runtime import Runtime, set_runtime
from shared.settings import load_settings

END = date(2026, 10, 20)


@pytest.fixture
def authed_runtime(env, tmp_path):
    settings = load_settings({**env, "WEBSITE_AUTH_ENABLED": "true"}, local_settings=tmp_path / "absent.json")
    rt = Runtime(settings)
    for scope in ("cost-scan", "cost-alerts", "cost-partition", "cost-aggregates", "cost-export"):
        for row in list(rt.storage.query(IDEMPOTENCY, "PartitionKey eq @pk", pk=scope)):
            rt.storage.delete(IDEMPOTENCY, scope, row["RowKey"])
    for row in list(rt.storage.query("episodes")):
        rt.storage.delete("episodes", row["PartitionKey"], row["RowKey"])
    frame, _ = demo_costs(n_resources=20, days=50, end=END, seed=11)
    root = Path(tmp_path) / "export"
    for run in export_runs(frame):
        for name, data in run.blobs:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
    ingest_paths(rt, [str(root)])
    run_daily_scan(rt, END)
    set_runtime(rt)
    yield rt
    set_runtime(None)


def _post(episode_id: str, token: str, body: bytes, principal: str = "") -> func.HttpResponse:
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if principal:
        headers["x-ms-client-principal-name"] = principal
    req = func.HttpRequest(
        "POST",
        f"http://127.0.0.1/api/review/anomalies/{episode_id}/feedback?t={token}",
        headers=headers,
        params={"t": token},
        route_params={"id": episode_id},
        body=body,
    )
    return review_feedback(req)


def test_with_app_service_authentication_the_signed_in_user_is_recorded_and_every_path_keeps_history(authed_runtime):
    rt = authed_runtime
    episode = next(e for e in list_episodes(rt, "open") if e["series_kind"] == "resource")
    token = parse_qs(urlsplit(review_url(rt.settings, episode["episode_id"])).query)["t"][0]
    # WHEN a signed-in user clicks "confirmed" (the name field is ignored: the platform's header wins)
    answer = _post(episode["episode_id"], token, b"verdict=confirmed&why=real&by=someone-else", "ana@contoso.example")
    assert answer.status_code == 303 and "done=confirmed" in answer.headers["Location"]
    # AND the Logic App then says "planned", and so does the CLI's path
    give_feedback(rt, episode["episode_id"], "planned", "approvals-flow", "change window")
    history = episode_detail(rt, episode["episode_id"])["feedback"]
    assert [(h["verdict"], h["by"], h["authenticated"], h["source"]) for h in history] == [
        ("confirmed", "ana@contoso.example", True, "review-page"),
        ("planned", "approvals-flow", False, "api"),
    ]
    # a form that is not a form, or too big, is refused without touching the history
    assert _post(episode["episode_id"], token, b"x" * 9000).status_code == 413
    assert len(episode_detail(rt, episode["episode_id"])["feedback"]) == 2
