"""The fleet's deployment files and dashboard, checked without a container runtime.

- `dashboards/fleet-compose.yml` parses and starts three members (etcd, a TCP balancer in
  front, Prometheus scraping each member), each with the io_uring needs of a container and the
  session key and admin token from the environment (compose refuses to start without them),
  never written in the file; every proxy configuration it mounts passes
  `mcp-proxy --check-config`; the balancer sends connections to all three members and
  Prometheus scrapes all three (and `promtool check config` accepts its file, when installed).
- The Grafana dashboard has a member variable (`instance`), every metric selector in every
  panel and variable query follows it, and a fleet row shows each member apart (grouped by
  instance, and one panel repeated per member).
"""

from __future__ import annotations

import json
import re
import subprocess

import yaml

import harness
from test_metrics import DASHBOARDS, PROMTOOL

COMPOSE = DASHBOARDS / "fleet-compose.yml"
MEMBERS = ["mcp-proxy-1", "mcp-proxy-2", "mcp-proxy-3"]


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def mounted(service: dict) -> dict[str, str]:
    """Host file (relative to dashboards/) by container path."""
    out = {}
    for v in service.get("volumes", []):
        host, container = v.split(":")[:2]
        if host.startswith("./"):
            out[container] = host[2:]
    return out


def test_the_fleet_compose_starts_three_members_on_etcd_behind_a_balancer():
    services = compose()["services"]
    for name in MEMBERS:
        m = services[name]
        assert m["hostname"] == name, m
        assert m["ulimits"]["memlock"] == -1 and "seccomp=unconfined" in m["security_opt"], m
        env = m["environment"]
        # From the environment, required: `${VAR:?message}` makes compose refuse to start.
        for var in ("MCP_PROXY_SESSION_KEY", "MCP_PROXY_ADMIN_TOKEN"):
            assert env[var].startswith(f"${{{var}:?"), env
        assert "etcd" in m["depends_on"]
    assert "etcd" in services and any("--listen-client-urls" in a for a in services["etcd"]["command"])
    assert not re.search(r"session_key\s*=|[0-9a-f]{64}", COMPOSE.read_text()), "a secret in the compose file"

    balancer = services["balancer"]
    conf = (DASHBOARDS / mounted(balancer)["/etc/nginx/nginx.conf"]).read_text()
    for name in MEMBERS:
        assert f"server {name}:8080" in conf, conf
    assert balancer["ports"] == ["8080:8080"]

    prometheus = services["prometheus"]
    prom_file = DASHBOARDS / mounted(prometheus)["/etc/prometheus/prometheus.yml"]
    targets = yaml.safe_load(prom_file.read_text())["scrape_configs"][0]["static_configs"][0]["targets"]
    assert sorted(targets) == [f"{n}:8085" for n in MEMBERS], targets
    if PROMTOOL:
        # promtool resolves rule_files next to the config; the fleet's reuses alerts.yml.
        r = subprocess.run([PROMTOOL, "check", "config", "--syntax-only", str(prom_file)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr


def test_every_config_the_fleet_mounts_passes_check_config():
    services = compose()["services"]
    checked = set()
    for name in MEMBERS:
        path = mounted(services[name])["/etc/mcp-proxy/mcp-proxy.toml"]
        checked.add(path)
        r = subprocess.run([str(harness.PROXY_BIN), "--check-config", str(DASHBOARDS / path)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"{path}: {r.stdout}{r.stderr}"
        text = (DASHBOARDS / path).read_text()
        assert "[cluster]" in text and "http://etcd:2379" in text, text
        # Other members and Prometheus reach each admin listener by its compose host name.
        for other in MEMBERS:
            assert f"{other}:8085" in text, text
    assert checked == {"fleet/mcp-proxy.toml"}, "one configuration for the whole fleet"


def exprs(dash: dict) -> list[tuple[str, str]]:
    """(panel title, expression) of every panel target."""
    return [(p.get("title", ""), t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


def test_the_dashboard_follows_a_member_variable_and_has_a_fleet_view():
    dash = json.loads((DASHBOARDS / "grafana" / "mcp-proxy.json").read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    member = variables["instance"]
    assert member["includeAll"] and member["multi"], member
    assert "instance" in member["query"]["query"], member
    # The server list follows the members chosen.
    assert 'instance=~"$instance"' in variables["server"]["query"]["query"], variables["server"]

    for title, expr in exprs(dash):
        for selector in re.finditer(r"\b(mcp_proxy_[a-z0-9_]+)(\{[^}]*\})?", expr):
            assert selector.group(2) and 'instance=~"$instance"' in selector.group(2), \
                f"{title}: {selector.group(0)} ignores the member variable"
        if expr.startswith("up") or " up{" in expr:
            assert 'instance=~"$instance"' in expr, f"{title}: {expr}"

    titles = [p["title"] for p in dash["panels"]]
    row = titles.index("Fleet: per member")
    fleet = dash["panels"][row + 1:]
    assert len(fleet) >= 5, titles
    by_member = [p for p in fleet for t in p["targets"] if "by (instance" in t["expr"] or t["expr"].startswith("up{")]
    assert len(by_member) >= 5, [p["title"] for p in fleet]
    for p in by_member:
        assert any("{{instance}}" in t["legendFormat"] for t in p["targets"]), p["title"]
    repeated = [p for p in fleet if p.get("repeat") == "instance"]
    assert repeated and "$instance" in repeated[0]["title"], [p["title"] for p in fleet]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
