"""docker-compose.yml, checked by parsing it (no Docker engine here): every service, port, file and environment
variable the harness expects is defined, and the generated config files are current."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from harness import compose
from harness.scenario import load_scenario
from reference_runtime.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def exposed(service: str) -> set[int]:
    spec = SERVICES[service]
    ports = {int(p) for p in spec.get("expose", [])}
    ports |= {int(str(p).rsplit(":", 1)[-1]) for p in spec.get("ports", [])}
    return ports


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port, url
    return parts.hostname, parts.port


def test_the_generated_files_are_current() -> None:
    assert compose.main(["--check"]) == 0, "run `python -m harness.compose` and commit the result"


def test_every_service_of_the_stack_is_there_with_the_real_toxiproxy() -> None:
    assert set(SERVICES) >= {"toxiproxy", "storage", "fakes", "runtime", "harness"}
    assert SERVICES["toxiproxy"]["image"].startswith("ghcr.io/shopify/toxiproxy:")
    assert SERVICES["harness"]["environment"]["TOXIPROXY_URL"] == "http://toxiproxy:8474"
    assert 8474 in exposed("toxiproxy")
    for name in ("fakes", "runtime", "harness"):
        assert SERVICES[name]["build"] == "."
    assert (ROOT / "Dockerfile").is_file()
    # published ports stay on the host's loopback
    for spec in SERVICES.values():
        for port in spec.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), port


def test_mounted_and_referenced_files_exist() -> None:
    for spec in SERVICES.values():
        for volume in spec.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./") and not source.startswith("./runs"):
                assert (ROOT / source).exists(), source
        command = spec.get("command", [])
        for flag in ("--config", "run"):
            if flag in command:
                path = command[command.index(flag) + 1]
                assert (ROOT / path).is_file(), path


def test_every_proxy_listens_on_an_exposed_port_and_forwards_to_an_exposed_service() -> None:
    proxies = json.loads((ROOT / "compose" / "toxiproxy.json").read_text())
    assert {p["name"] for p in proxies} == {compose.proxy_name(d) for d in compose.PROXIES}
    for proxy in proxies:
        assert int(proxy["listen"].rsplit(":", 1)[1]) in exposed("toxiproxy")
        service, port = proxy["upstream"].split(":")
        assert int(port) in exposed(service), proxy


def test_the_runtime_reaches_every_dependency_through_toxiproxy() -> None:
    raw = yaml.safe_load((ROOT / "compose" / "runtime.yaml").read_text())
    config = parse_config(raw, source="compose/runtime.yaml")
    proxy_ports = {port for port, _ in compose.PROXIES.values()}
    urls = [config.providers.stt.base_url, config.providers.llm.base_url, config.providers.tts.base_url,
            raw["recording"]["s3"]["endpoint_url"], raw["workflow"]["url"], raw["tools"]["url"]]
    for url in urls:
        host, port = host_port(url)
        assert host == "toxiproxy" and port in proxy_ports, url
    assert config.port in exposed("runtime")
    providers = yaml.safe_load((ROOT / "compose" / "providers.yaml").read_text())
    for name, port in compose.FAKE_PORTS.items():
        assert providers[name]["port"] == port and port in exposed("fakes")


def test_the_harness_scenario_names_every_dependency_and_reaches_the_services() -> None:
    command = SERVICES["harness"]["command"]
    scenario = load_scenario(ROOT / command[command.index("run") + 1])
    assert "--allow-remote" in command  # compose hosts are not loopback: said explicitly
    chaos = scenario.chaos
    assert chaos.toxiproxy_url == SERVICES["harness"]["environment"]["TOXIPROXY_URL"]
    assert set(chaos.dependencies) == set(compose.PROXIES)
    for name, ref in chaos.dependencies.items():
        assert ref.proxy == compose.proxy_name(name)
        if ref.control_url:
            host, port = host_port(ref.control_url)
            assert host == "fakes" and port in exposed("fakes")
    assert scenario.target.webhook is not None
    host, port = host_port(scenario.target.webhook.url)
    assert host == "runtime" and port in exposed("runtime")
    runtime = yaml.safe_load((ROOT / "compose" / "runtime.yaml").read_text())
    assert scenario.target.webhook.auth_token == runtime["twilio"]["auth_token"]
    assert chaos.storage_url is not None and host_port(chaos.storage_url) == ("storage", 5000)
    assert chaos.storage_bucket == runtime["recording"]["s3"]["bucket"]
    for fault in scenario.faults:
        assert fault.target in chaos.dependencies
