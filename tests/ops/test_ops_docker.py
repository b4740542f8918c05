"""Dockerfile, .dockerignore and compose.yaml, checked without a Docker engine: hadolint lints
the Dockerfile, the Docker SDK's own .dockerignore matcher computes the build context, the
compose file is validated against the Compose Specification schema, and the image's command
(ENTRYPOINT + CMD with the image's ENV, as its non-root user) is run for real on loopback.
test_ops_docker_engine.py builds and runs the image itself in a private dockerd."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.ops.support import OPS, ROOT, VENV_BIN, load_yaml, poll, require_tool, run
from tests.support.servers import free_port

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "compose.yaml"
IMAGE_UID = 10001


# --- a small Dockerfile reader ---------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) with continuation lines joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = rest.split()
            base = words[0]
            for key, value in args.items():
                base = base.replace("${" + key + "}", value)
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages and keyword == "ARG":
            key, _, value = rest.partition("=")
            args[key] = value
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for item in shlex.split(args):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def final_stage() -> Stage:
    return parse_dockerfile(DOCKERFILE.read_text())[1][-1]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not exec form: {args}"
    return [str(v) for v in value]


# --- Dockerfile ------------------------------------------------------------------------------


def test_hadolint_passes_with_no_findings() -> None:
    hadolint = require_tool("hadolint")
    result = run([hadolint, "--failure-threshold", "style", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_would_catch_a_shell_form_entrypoint(tmp_path: Path) -> None:
    """The lint above can fail: a shell-form ENTRYPOINT (SIGTERM lost in sh) is flagged."""
    hadolint = require_tool("hadolint")
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        DOCKERFILE.read_text().replace(
            'ENTRYPOINT ["gunicorn", "-c", "ops/gunicorn.conf.py"]',
            "ENTRYPOINT gunicorn -c ops/gunicorn.conf.py",
        )
    )
    result = run([hadolint, "--failure-threshold", "style", str(bad)])
    assert result.returncode != 0
    assert "DL3025" in result.stdout


def test_multi_stage_slim_with_locked_dependencies_in_their_own_layer() -> None:
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    assert len(stages) >= 2
    assert all("slim" in stage.base for stage in stages), [s.base for s in stages]
    build = stages[0]
    steps = build.instructions
    copy_lock = steps.index(("COPY", "requirements.lock ./"))
    install_deps = next(
        i for i, (kw, args) in enumerate(steps) if kw == "RUN" and "requirements.lock" in args
    )
    copy_code = next(i for i, (kw, args) in enumerate(steps) if kw == "COPY" and "gateway/" in args)
    # Dependencies come from the hashed lock alone, before any source is copied, so code
    # changes reuse the cached dependency layer.
    assert copy_lock < install_deps < copy_code
    assert not any(kw == "COPY" for kw, _ in steps[copy_lock + 1 : install_deps])
    install = shlex.split(steps[install_deps][1])
    assert install[:2] == ["pip", "install"]
    assert "--require-hashes" in install
    assert install[install.index("-r") + 1] == "requirements.lock"
    # The project itself resolves nothing: everything it needs is pinned in the lock.
    (project,) = [args for kw, args in steps[copy_code:] if kw == "RUN" and "pip install" in args]
    assert "--no-deps ." in project
    assert "pip check" in project
    runtime = stages[-1]
    assert any(args.startswith(f"--from={build.name} /opt/venv") for args in runtime.all("COPY"))


def test_runtime_stage_contract() -> None:
    stage = final_stage()
    env = env_of(stage)
    assert env["PYTHONUNBUFFERED"] == "1"
    (user,) = stage.all("USER")
    uid = user.split(":")[0]
    assert uid.isdigit(), "numeric uid, so runAsNonRoot can verify it"
    assert int(uid) == IMAGE_UID
    assert stage.all("EXPOSE") == ["8000"]
    (entrypoint,) = stage.all("ENTRYPOINT")
    (cmd,) = stage.all("CMD")
    # Exec form, gunicorn as PID 1: SIGTERM reaches the gunicorn master directly.
    assert exec_form(entrypoint) + exec_form(cmd) == [
        "gunicorn",
        "-c",
        "ops/gunicorn.conf.py",
        "gateway.app:app",
    ]
    (healthcheck,) = stage.all("HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert "CMD [" in healthcheck, "exec-form HEALTHCHECK (slim has no curl; python does it)"


def build_context() -> set[str]:
    """The files `docker build .` sends, by the Docker SDK's own .dockerignore matcher."""
    from docker.utils.build import exclude_paths

    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return set(exclude_paths(str(ROOT), patterns, dockerfile="Dockerfile"))


def test_dockerignore_sends_what_the_dockerfile_copies_and_nothing_else() -> None:
    context = build_context()
    for stage in parse_dockerfile(DOCKERFILE.read_text())[1]:
        for args in stage.all("COPY"):
            if args.startswith("--from="):
                continue
            *sources, _dest = args.split()
            for source in sources:
                path = source.rstrip("/")
                assert (ROOT / path).exists(), f"COPY {source}: missing in the repository"
                assert path in context, f"COPY {source}: excluded by .dockerignore"
    leaked = {p for p in context if p.split("/")[0] in {".git", ".venv", "tests", "loadtest"}}
    assert leaked == set()
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in context)
    assert not any(p.startswith(("ops/k8s", "ops/grafana", "ops/prometheus")) for p in context)


def test_image_module_target_exists() -> None:
    """The CMD's `gateway.app:app` is importable (what gunicorn loads in the image); checked in
    a fresh interpreter so the import's side effects stay out of the test process."""
    check = "import gateway.app as m; assert callable(m.app), 'gateway.app:app is not an app'"
    result = run([sys.executable, "-c", check])
    assert result.returncode == 0, result.stderr


def world_readable(path: Path) -> bool:
    for part in [path, *path.parents]:
        mode = part.stat().st_mode
        if not mode & stat.S_IXOTH or not mode & stat.S_IROTH:
            return False
    return True


def test_image_command_serves_healthcheck_and_stops_on_sigterm(tmp_path: Path) -> None:
    """Run what the image runs, the way it runs it: ENTRYPOINT + CMD from the Dockerfile, in a
    /app-like directory holding only ops/gunicorn.conf.py, with the image's ENV, as uid 10001
    when the tests run as root. Its HEALTHCHECK command must pass, and SIGTERM (docker stop,
    kubelet) must end it cleanly within gunicorn's graceful timeout."""
    conf = OPS / "gunicorn.conf.py"
    assert conf.exists(), "ops/gunicorn.conf.py is missing (the image's gunicorn config)"
    stage = final_stage()
    argv = exec_form(stage.all("ENTRYPOINT")[0]) + exec_form(stage.all("CMD")[0])
    workdir = tmp_path / "app"
    (workdir / "ops").mkdir(parents=True)
    shutil.copy(conf, workdir / "ops" / "gunicorn.conf.py")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PROMETHEUS_"))}
    env.update(env_of(stage))
    env.update(
        {
            "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
            "VIRTUAL_ENV": str(VENV_BIN.parent),
            "GATEWAY_HOST": "127.0.0.1",  # loopback only in tests; the image binds 0.0.0.0
            "GATEWAY_PORT": str(port),
        }
    )
    # As the image's uid when possible: needs root here, and a checkout, venv and interpreter
    # that other users may read (a pyenv Python under /root is not).
    interpreter = Path(sys.executable).resolve()
    as_image_user = os.geteuid() == 0 and all(
        world_readable(p) for p in (ROOT, VENV_BIN, interpreter.parent)
    )
    if as_image_user:
        os.chmod(tmp_path, 0o755)
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=IMAGE_UID if as_image_user else None,
            group=IMAGE_UID if as_image_user else None,
        )
    healthcheck = exec_form(stage.all("HEALTHCHECK")[0].split("CMD", 1)[1].strip())
    try:

        def healthy() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"exited {process.returncode}:\n{log_path.read_text()}")
            check = subprocess.run(healthcheck, env=env, capture_output=True, timeout=10)
            return check.returncode == 0

        poll(healthy, 60, "the image's HEALTHCHECK to pass", interval=0.25)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=40)
        assert code == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


# --- compose -----------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return dict(load_yaml(COMPOSE))


def test_compose_file_matches_the_compose_specification() -> None:
    checker = require_tool("check-jsonschema")
    result = run([checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_can_fail(tmp_path: Path) -> None:
    checker = require_tool("check-jsonschema")
    bad = tmp_path / "compose.yaml"
    bad.write_text(COMPOSE.read_text().replace("stop_grace_period:", "stop_grace_periode:"))
    result = run([checker, "--builtin-schema", "vendor.compose-spec", str(bad)])
    assert result.returncode != 0


def test_compose_stack_for_a_laptop() -> None:
    services = compose()["services"]
    gateways = {name: s for name, s in services.items() if s.get("build")}
    assert len(gateways) == 2
    for service in gateways.values():
        assert service["environment"]["GATEWAY_BROKER_URL"] == "redis://redis:6379/0"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["read_only"] is True
        assert "/tmp" in service["tmpfs"]
        assert service["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317"
        assert [p.split(":")[-1] for p in service["ports"]] == ["8000"]
    assert services["redis"]["image"].startswith("redis:")
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    # Host ports bind to loopback only.
    for service in services.values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port


def test_compose_mounts_exist_in_the_repository() -> None:
    services = compose()["services"]
    mounts = {
        source: target
        for name in ("prometheus", "grafana")
        for source, target, *_ in (v.split(":") for v in services[name]["volumes"])
    }
    for source in mounts:
        assert (ROOT / source).exists(), source
    assert mounts["./ops/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./ops/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = load_yaml(OPS / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml")
    (only,) = provider["providers"]
    assert mounts["./ops/grafana/dashboards"] == only["options"]["path"]
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == only["options"]["path"] + "/gateway.json"
    # Prometheus in compose scrapes the two gateway services on the container port.
    config = load_yaml(OPS / "prometheus" / "prometheus.yml")
    gateway_job = next(j for j in config["scrape_configs"] if j["job_name"] == "gateway")
    targets = {t for sc in gateway_job["static_configs"] for t in sc["targets"]}
    assert targets == {f"{name}:8000" for name, s in services.items() if s.get("build")}


@pytest.mark.parametrize("name", ["Prometheus", "Jaeger"])
def test_grafana_datasources_point_at_compose_services(name: str) -> None:
    sources = load_yaml(OPS / "grafana" / "provisioning" / "datasources" / "datasources.yaml")
    source = next(s for s in sources["datasources"] if s["name"] == name)
    host = source["url"].split("//")[1].split(":")[0]
    assert host in compose()["services"]
