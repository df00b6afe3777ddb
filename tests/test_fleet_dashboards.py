"""The fleet's deployment files and dashboard, checked without a container runtime.

- `dashboards/fleet-compose.yml` parses and starts three members (etcd, a TCP balancer in
  front, Prometheus scraping each member), each with the io_uring needs of a container and the
  session key and admin token from the environment (compose refuses to start without them),
  never written in the file; every proxy configuration it mounts passes
  `mcp-proxy --check-config`; the balancer sends connections to all three members and
  Prometheus scrapes all three (and `promtool check config` accepts its file, when installed).
- `dashboards/kubernetes/` (fleet.yaml, secret.yaml) is valid for a Kubernetes 1.33 API server
  (every object, strictly, against the API's schemas) and holds a three-member StatefulSet behind
  a headless Service (the DNS names the one shared configuration lists), a client Service, an
  etcd, the session key and admin token from a Secret that ships placeholders only; the
  mounted configuration passes `--check-config`, and the placeholder key, left in place, stops
  the proxy at start naming MCP_PROXY_SESSION_KEY and how to make a key.
- The Grafana dashboard has a member variable (`instance`), every metric selector in every
  panel and variable query follows it, and a fleet row shows each member apart (grouped by
  instance, and one panel repeated per member).
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
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


KUBE = DASHBOARDS / "kubernetes"


def kube_objects() -> dict[tuple[str, str], dict]:
    out = {}
    for f in ("fleet.yaml", "secret.yaml"):
        for doc in yaml.safe_load_all((KUBE / f).read_text()):
            assert doc["metadata"]["namespace"] == "mcp-proxy", doc["metadata"]
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


KUBE_VERSION = "1.33"


def test_the_kubernetes_files_are_valid_for_the_api_server():
    """Every object of the Kubernetes files validates, strictly (no field the API does not know),
    against the Kubernetes API's schemas (kubernetes-validate), as `kubectl apply` would check it."""
    import copy

    import kubernetes_validate

    objects = kube_objects()
    for doc in objects.values():
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    # The check is strict: a misspelt field is refused.
    wrong = copy.deepcopy(objects[("StatefulSet", "mcp-proxy")])
    wrong["spec"]["replica"] = wrong["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, KUBE_VERSION, strict=True)


def test_the_kubernetes_set_runs_three_members_on_etcd_with_the_key_from_a_secret(tmp_path):
    objects = kube_objects()
    members = objects[("StatefulSet", "mcp-proxy")]
    spec = members["spec"]
    assert spec["replicas"] == 3
    headless = objects[("Service", spec["serviceName"])]
    assert headless["spec"]["clusterIP"] == "None"
    pod = spec["template"]["spec"]
    # The host name is the member's DNS name, so one configuration names every member.
    assert pod["setHostnameAsFQDN"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "Unconfined"
    (container,) = pod["containers"]
    secret = objects[("Secret", "mcp-proxy-fleet")]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    for var, key in (("MCP_PROXY_SESSION_KEY", "session-key"), ("MCP_PROXY_ADMIN_TOKEN", "admin-token")):
        assert env[var] == {"name": "mcp-proxy-fleet", "key": key}, env
        assert key in secret["stringData"]
    # No real key is shipped: the placeholder is refused at start (test below).
    assert not re.fullmatch(r"[0-9a-fA-F]{64}", secret["stringData"]["session-key"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    clients = objects[("Service", "mcp-proxy")]
    assert clients["spec"]["selector"] == spec["selector"]["matchLabels"]

    # The configuration the members mount passes --check-config, and names the etcd Service.
    (mount,) = container["volumeMounts"]
    config_arg = container["args"][container["args"].index("--config") + 1]
    assert config_arg.startswith(mount["mountPath"] + "/")
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    config_map = objects[("ConfigMap", volume["configMap"]["name"])]
    text = config_map["data"][config_arg.rsplit("/", 1)[1]]
    path = tmp_path / "mcp-proxy.toml"
    path.write_text(text)
    r = subprocess.run([str(harness.PROXY_BIN), "--check-config", str(path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    etcd_service = objects[("Service", "mcp-proxy-etcd")]
    assert f'"http://{etcd_service["metadata"]["name"]}:{etcd_service["spec"]["ports"][0]["port"]}"' in text
    assert objects[("StatefulSet", "mcp-proxy-etcd")]["spec"]["template"]["metadata"]["labels"] == \
        etcd_service["spec"]["selector"]
    for n in range(3):
        host = f"mcp-proxy-{n}.{spec['serviceName']}.mcp-proxy.svc.cluster.local:8085"
        assert host in text, f"{host} missing from admin_allowed_hosts"


def test_a_session_key_that_is_not_a_key_is_refused_at_start(tmp_path):
    """The Secret's placeholder, left in place, stops the member at once with the fix."""
    placeholder = kube_objects()[("Secret", "mcp-proxy-fleet")]["stringData"]["session-key"]
    config = tmp_path / "p.toml"
    config.write_text("[proxy]\n")
    r = subprocess.run([str(harness.PROXY_BIN), "--config", str(config), "--listen", "127.0.0.1:0",
                        "--admin-listen", "127.0.0.1:0", "--shards", "1"],
                       env={"MCP_PROXY_SESSION_KEY": placeholder, "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0, r.stdout
    assert "MCP_PROXY_SESSION_KEY" in r.stderr and "openssl rand -hex 32" in r.stderr, r.stderr
    assert placeholder not in r.stderr, "the configured value is echoed"
