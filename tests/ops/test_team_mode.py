"""Team mode as a team starts it: `infra/team.sh up` (PostgreSQL, MLflow with basic auth, Prefect, all on 127.0.0.1),
one real pipeline run against those servers, then what it left read straight from PostgreSQL; basic auth keeps the
champion alias from anyone without the right credentials; `infra/team.sh down` leaves no process behind.
The slow tests run the shrunken pipeline of tests/pipeline (SMALL): it trains and starts vLLM."""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from tasks.common.vllm_server import free_port
from tests.conftest import ROOT
from tests.small_project import small_project

TEAM_SH = ROOT / "infra" / "team.sh"
COMPOSE = ROOT / "infra" / "docker-compose.yml"
SECRETS = ("POSTGRES_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")
ADMIN = "admin"


def team_sh(command: str, env: dict[str, str], timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(TEAM_SH), command], env=env, capture_output=True, text=True, timeout=timeout)


def reachable_dir() -> Path:
    """A fresh folder the `postgres` user can enter (pytest's tmp folders are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="team-", dir="/tmp"))
    folder.chmod(0o755)
    return folder


@dataclass
class Team:
    dir: Path
    env: dict[str, str]   # what `up` ran with: TEAM_* settings and the secrets
    ports: dict[str, int]

    @property
    def mlflow(self) -> str:
        return f"http://127.0.0.1:{self.ports['mlflow']}"

    @property
    def admin(self) -> tuple[str, str]:
        return ADMIN, self.env["MLFLOW_AUTH_ADMIN_PASSWORD"]

    def sql(self, database: str, query: str) -> list[tuple[str, ...]]:
        """Rows of `query` as psql prints them, straight from PostgreSQL (not through any server)."""
        out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.ports["pg"]), "-U", "team", "-d", database,
                              "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", query], capture_output=True, text=True,
                             env={**os.environ, "PGPASSWORD": self.env["POSTGRES_PASSWORD"]}, check=True).stdout
        return [tuple(line.split("\t")) for line in out.splitlines()]

    def processes(self) -> list[str]:
        """Command lines of live processes started by team.sh (each carries TEAM_DIR in its environment)."""
        marker = f"TEAM_DIR={self.dir}\0".encode()
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if marker in (proc / "environ").read_bytes():
                    found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:   # gone meanwhile
                pass
        return found


def test_up_refuses_to_start_without_its_secrets():
    folder = reachable_dir() / "team"
    base = {**os.environ, "TEAM_DIR": str(folder), **{k: secrets.token_urlsafe(16) for k in SECRETS}}
    for missing in SECRETS:
        refused = team_sh("up", {k: v for k, v in base.items() if k != missing})
        assert refused.returncode != 0 and missing in refused.stderr, refused.stderr
    short = team_sh("up", {**base, "MLFLOW_AUTH_ADMIN_PASSWORD": "short"})
    assert short.returncode != 0 and "at least 12" in short.stderr, short.stderr
    assert not folder.exists()   # refused before anything was created or started
    shutil.rmtree(folder.parent)


def test_compose_file_is_valid_and_takes_its_secrets_from_the_environment():
    subprocess.run([str(ROOT / ".venv" / "bin" / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                    str(COMPOSE)], check=True, capture_output=True)
    text = COMPOSE.read_text()
    for var in SECRETS:   # compose refuses to start without them, as team.sh does
        assert f"${{{var}:?" in text, var
    services = yaml.safe_load(text)["services"]
    # the same server commands as team.sh (there, the ports and folders come from its settings)
    assert services["mlflow"]["command"][:4] == ["mlflow", "server", "--app-name", "basic-auth"]
    assert "--artifacts-destination" in services["mlflow"]["command"]
    assert services["prefect"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert all(s["network_mode"] == "host" for s in services.values())


@pytest.fixture(scope="module")
def team():
    folder = reachable_dir()
    ports = {name: free_port("127.0.0.1") for name in ("pg", "mlflow", "prefect")}
    env = {**os.environ, "TEAM_DIR": str(folder), "TEAM_PG_PORT": str(ports["pg"]),
           "TEAM_MLFLOW_PORT": str(ports["mlflow"]), "TEAM_PREFECT_PORT": str(ports["prefect"]),
           **{k: secrets.token_urlsafe(16) for k in SECRETS}}
    try:
        started = team_sh("up", env)
        assert started.returncode == 0, started.stdout + started.stderr
        yield Team(folder, env, ports)
    finally:
        team_sh("down", env)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def pipeline(team, tmp_path_factory):
    """One flow run of the shrunken pipeline with MLflow and Prefect on the team's servers, as the admin."""
    proj = tmp_path_factory.mktemp("team-project")
    params = small_project(proj)
    params["tracking"]["tracking_uri"] = team.mlflow
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    user, password = team.admin
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
           "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}", "MLFLOW_TRACKING_USERNAME": user,
           "MLFLOW_TRACKING_PASSWORD": password, "PREFECT_API_URL": f"http://127.0.0.1:{team.ports['prefect']}/api"}
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=proj, env=env, check=True)
    run = subprocess.run([sys.executable, "-m", "tasks", "pipeline"], cwd=proj, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return yaml.safe_load((proj / "data/registry/registration.json").read_text()), params


@pytest.mark.slow
def test_the_pipeline_keeps_its_runs_alias_and_flow_runs_in_postgres(team, pipeline):
    from tasks.stages import STAGES

    registration, params = pipeline
    name = params["tracking"]["registered_model"]
    parents = team.sql("mlflow", "SELECT r.run_uuid, r.status FROM runs r JOIN experiments e ON e.experiment_id = "
                       "r.experiment_id JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'pipeline.launcher' "
                       f"WHERE t.value = 'prefect' AND e.name = '{params['tracking']['experiment']}'")
    assert [status for _, status in parents] == ["FINISHED"], parents
    stages = team.sql("mlflow", "SELECT s.value, r.status FROM runs r JOIN tags p ON p.run_uuid = r.run_uuid AND "
                      "p.key = 'mlflow.parentRunId' JOIN tags s ON s.run_uuid = r.run_uuid AND s.key = 'stage' "
                      f"WHERE p.value = '{parents[0][0]}'")
    assert sorted(stages) == sorted((s.name, "FINISHED") for s in STAGES), stages

    assert registration["alias"] == "champion", registration   # the first registration has no champion to beat
    assert team.sql("mlflow", f"SELECT alias, version FROM registered_model_aliases WHERE name = '{name}'") == \
        [("champion", str(registration["version"]))]
    [(source,)] = team.sql("mlflow", f"SELECT source FROM model_versions WHERE name = '{name}'")
    assert source.startswith("mlflow-artifacts:/"), source   # uploaded through the server, kept where it says
    assert (team.dir / "artifacts" / source.removeprefix("mlflow-artifacts:/") / "config.json").is_file()

    flows = team.sql("prefect", "SELECT f.name, fr.state_type FROM flow_run fr JOIN flow f ON f.id = fr.flow_id")
    assert flows == [("finetune-pipeline", "COMPLETED")], flows
    tasks = team.sql("prefect", "SELECT state_type, count(*) FROM task_run GROUP BY state_type")
    assert tasks == [("COMPLETED", str(len(STAGES)))], tasks


def set_alias(team: Team, name: str, version: int, auth: tuple[str, str] | None) -> requests.Response:
    """The REST call `promote` makes (MlflowClient.set_registered_model_alias), plain HTTP."""
    return requests.post(f"{team.mlflow}/api/2.0/mlflow/registered-models/alias", auth=auth, timeout=30,
                         json={"name": name, "alias": "champion", "version": str(version)})


@pytest.mark.slow
def test_only_an_editor_moves_the_champion(team, pipeline):
    registration, params = pipeline
    name, champion = params["tracking"]["registered_model"], registration["version"]
    api = f"{team.mlflow}/api/2.0/mlflow"
    [(source, run_id)] = team.sql("mlflow", f"SELECT source, run_id FROM model_versions WHERE name = '{name}'")
    created = requests.post(f"{api}/model-versions/create", auth=team.admin, timeout=30,
                            json={"name": name, "source": source, "run_id": run_id})
    assert created.status_code == 200, created.text
    other = int(created.json()["model_version"]["version"])
    reader = ("reader", secrets.token_urlsafe(16))   # an account with the default permission: READ
    made = requests.post(f"{api}/users/create", auth=team.admin, timeout=30,
                         json={"username": reader[0], "password": reader[1]})
    assert made.status_code == 200, made.text

    def champion_in_postgres() -> list[tuple[str, ...]]:
        return team.sql("mlflow", f"SELECT version FROM registered_model_aliases WHERE name = '{name}' "
                        "AND alias = 'champion'")

    assert requests.get(f"{api}/registered-models/get", params={"name": name}, timeout=30).status_code == 401
    assert set_alias(team, name, other, None).status_code == 401
    assert set_alias(team, name, other, (ADMIN, "not-" + team.admin[1])).status_code == 401
    assert set_alias(team, name, other, reader).status_code == 403
    assert requests.get(f"{api}/registered-models/get", params={"name": name}, auth=reader,
                        timeout=30).status_code == 200   # reading is what READ allows
    assert champion_in_postgres() == [(str(champion),)]

    moved = set_alias(team, name, other, team.admin)
    assert moved.status_code == 200, moved.text
    assert champion_in_postgres() == [(str(other),)]


@pytest.mark.slow
def test_down_stops_every_process_it_started(team):
    assert team.processes(), "nothing carries TEAM_DIR: the check below would prove nothing"
    stopped = team_sh("down", team.env)
    assert stopped.returncode == 0, stopped.stderr
    assert team.processes() == []
    for port in team.ports.values():
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
