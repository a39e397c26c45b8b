"""The README's quickstart works as written: every ```bash runnable block is run, in order, in one shell.

It runs in a copy of the repository (files as git knows them, the installed .venv and node_modules
linked in), so `.valueflow/`, `local.settings.json` and `run.log` are the copy's. The one change made to
the commands: the local host's and Azurite's default ports become free ones (VALUEFLOW_PORT, AZURITE_PORTS),
so the test never meets another `make run`. Deploy blocks need an Azure subscription and are not marked
runnable."""

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.e2e
BLOCK = re.compile(r"^```bash runnable\n(.*?)^```", re.S | re.M)


def runnable_blocks(text: str) -> list[str]:
    return BLOCK.findall(text)


def _copy_repo(dest: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)  # keeps mtimes: make sees the install as up to date
    for linked in (".venv", "node_modules"):
        (dest / linked).symlink_to((ROOT / linked).resolve(), target_is_directory=True)


def test_the_readme_marks_its_local_commands_runnable():
    blocks = runnable_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 4
    text = "\n".join(blocks)
    for command in ("make run", "api/health", "policy_events", "costs score", "costs ingest", "doctor"):
        assert command in text, command


def test_every_runnable_readme_block_works_from_a_fresh_copy(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_repo(repo)
    port = free_port()
    blocks = runnable_blocks((ROOT / "README.md").read_text())
    script = "set -euo pipefail\n" + "\n".join(blocks).replace("127.0.0.1:7071", f"127.0.0.1:{port}")
    env = {
        k: v
        for k, v in os.environ.items()
        if k.split("=")[0] not in ("WAREHOUSE_PATH", "OUTBOX_DIR", "VALUEFLOW_STATE_DIR", "LOCAL_FUNCTION_KEY")
        and not k.startswith(("AzureWebJobs", "PYTEST", "VALUEFLOW_"))
    }
    env.update(
        {
            "VALUEFLOW_PORT": str(port),
            "AZURITE_PORTS": ",".join(str(free_port()) for _ in range(3)),
            "VALUEFLOW_LOG_FORMAT": "text",
        }
    )
    proc = subprocess.Popen(
        ["bash", "-c", script], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=540)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the README blocks did not finish in 9 minutes:\n{out[-4000:]}")
    finally:
        pid_file = repo / ".valueflow" / "run.pid"
        if pid_file.is_file():  # a failed run left `make run` behind: stop it like the README does
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    log = (repo / "run.log").read_text(errors="replace") if (repo / "run.log").is_file() else ""
    assert proc.returncode == 0, f"{out[-5000:]}\n--- run.log ---\n{log[-3000:]}"
    assert "Traceback" not in out, out[-5000:]
    # what a newcomer sees: a healthy host, the policy path on the fake ARM, the anomaly, its card
    assert '"status"' in out and "Fake ARM (VALUEFLOW_FAKE_ARM=true)" in out
    assert "would remediate" in out or "storage-secure-transfer" in out, out[-5000:]
    assert "vm-api-01" in out and "Cost anomaly" in out, out[-5000:]
    assert "overall:" in out
