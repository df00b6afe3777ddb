"""The container image and the compose quick start.

What a user without Rust runs is the image built from `Dockerfile` and `dashboards/docker-compose.yml`:
- the Dockerfile passes hadolint (installed from tests/requirements.txt);
- its build stage runs the same `cargo build` command as CI (tests/run.sh), and every binary the
  runtime stage copies (mcp-proxy and mcpctl) is one that command builds, so the image holds
  what the tests ran against;
- the compose file publishes the MCP and admin ports, starts proxy + Prometheus + Grafana with
  the shipped dashboard and alert rules, and gives the proxy the locked memory and io_uring
  system calls it needs (written where users read it: README quick start, compose comments);
- with a container runtime available, the image builds and `mcpctl` and `mcp-proxy` run in it;
  without one the build is skipped with a message saying so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from harness import REPO_ROOT, TESTS_DIR

DOCKERFILE = REPO_ROOT / "Dockerfile"
COMPOSE = REPO_ROOT / "dashboards" / "docker-compose.yml"


def hadolint() -> str | None:
    venv = TESTS_DIR / ".venv" / "bin" / "hadolint"
    return str(venv) if venv.exists() else shutil.which("hadolint")


def test_the_dockerfile_passes_hadolint():
    lint = hadolint()
    if lint is None:
        pytest.skip("hadolint is not installed (pip install -r tests/requirements.txt)")
    run = subprocess.run([lint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def ci_build_command() -> str:
    """The `cargo build` line tests/run.sh runs."""
    text = (TESTS_DIR / "run.sh").read_text()
    builds = [l.strip() for l in text.splitlines() if l.strip().startswith("cargo build")]
    assert len(builds) == 1, builds
    return builds[0]


def test_the_image_is_built_by_the_ci_command_and_copies_what_it_builds():
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+\S+(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert len(stages) >= 2, "a multi-stage build: a build stage and a slim runtime stage"
    runs = re.findall(r"^RUN\s+(cargo build.*)$", text, re.M)
    assert runs == [ci_build_command()], (runs, ci_build_command())
    copied = re.findall(r"^COPY --from=build /src/target/release/(\S+)\s", text, re.M)
    assert sorted(copied) == ["mcp-proxy", "mcpctl"], copied
    # The same command, run by CI before this test, made exactly these binaries: each runs.
    for name in copied:
        binary = REPO_ROOT / "target" / "release" / name
        assert binary.exists(), f"{binary} is not built by `{ci_build_command()}`"
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and out.stdout.startswith(name), out


def test_compose_publishes_both_ports_and_gives_the_proxy_what_io_uring_needs():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"mcp-proxy", "prometheus", "grafana"} <= services.keys()
    proxy = services["mcp-proxy"]
    assert proxy["build"]["dockerfile"] == "Dockerfile"
    assert (COMPOSE.parent / proxy["build"]["context"] / "Dockerfile").resolve() == DOCKERFILE
    ports = [str(p) for p in proxy["ports"]]
    assert "8080:8080" in ports
    assert any(p.endswith("8085:8085") for p in ports), ports
    assert proxy["ulimits"]["memlock"] == -1
    assert "seccomp=unconfined" in proxy["security_opt"]
    # The compose file says why, where its users read it.
    comments = COMPOSE.read_text()
    assert "memlock" in comments and "seccomp" in comments and "io_uring" in comments
    # Prometheus gets the shipped rules, Grafana the shipped dashboard and provisioning.
    prom_volumes = " ".join(services["prometheus"]["volumes"])
    assert "alerts.yml" in prom_volumes and "prometheus.yml" in prom_volumes
    graf_volumes = " ".join(services["grafana"]["volumes"])
    assert "mcp-proxy.json" in graf_volumes and "provisioning" in graf_volumes
    for volume in services["prometheus"]["volumes"] + services["grafana"]["volumes"]:
        source = volume.split(":")[0]
        assert (COMPOSE.parent / source).exists(), source
    # The proxy's admin address in the compose config is the one Prometheus scrapes.
    scrape = yaml.safe_load((COMPOSE.parent / "prometheus.yml").read_text())
    targets = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["mcp-proxy:8085"]
    config = (COMPOSE.parent / "mcp-proxy.toml").read_text()
    assert 'admin_listen = "0.0.0.0:8085"' in config


def test_the_compose_proxy_config_is_valid():
    config = COMPOSE.parent / "mcp-proxy.toml"
    out = subprocess.run(
        [str(REPO_ROOT / "target" / "release" / "mcp-proxy"), "--check-config", str(config)],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0, out.stderr


def test_the_readme_quick_start_names_the_container_requirements():
    readme = (REPO_ROOT / "README.md").read_text()
    assert "docker compose up" in readme
    assert "--ulimit memlock=-1" in readme
    assert "seccomp" in readme


def docker_available() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "no docker command"
    info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        return "docker cannot reach a daemon: " + (info.stderr.strip().splitlines() or ["?"])[-1]
    return None


def test_the_image_builds_and_its_binaries_run():
    why = docker_available()
    if why is not None:
        pytest.skip(f"image build not checked here ({why}); the Dockerfile is linted and its "
                    "build command checked by the tests above")
    tag = "mcp-proxy:test"
    build = subprocess.run(["docker", "build", "-t", tag, str(REPO_ROOT)],
                           capture_output=True, text=True, timeout=3000)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    for argv in (["mcp-proxy", "--version"], ["mcpctl", "--version"]):
        run = subprocess.run(["docker", "run", "--rm", "--entrypoint", argv[0], tag, *argv[1:]],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
