"""Checks the OpenTelemetry Collector's configuration (infra/deploy/otel/collector.yaml):
every receiver, processor, exporter and extension the service section names is defined,
a traces pipeline exists, OTLP is received on 4317 (gRPC) and 4318 (HTTP), and the hosts
the exporters send to are services of compose.yaml."""

import urllib.parse

from lintlib import DEPLOY, Problems, load_yaml, rel

CONFIG = DEPLOY / "otel" / "collector.yaml"
KINDS = ("receivers", "processors", "exporters", "connectors")


def main():
    problems = Problems("collector")
    where = rel(CONFIG)
    config = load_yaml(CONFIG) or {}
    service = config.get("service", {})
    pipelines = service.get("pipelines", {})
    problems.require("traces" in {p.split("/")[0] for p in pipelines}, where, "no traces pipeline")
    for name in service.get("extensions", []):
        problems.require(
            name in (config.get("extensions") or {}),
            where,
            f"service names undefined extension {name}",
        )
    for pipeline, parts in pipelines.items():
        problems.require(
            parts.get("receivers") and parts.get("exporters"),
            where,
            f"pipeline {pipeline} needs receivers and exporters",
        )
        for kind in ("receivers", "processors", "exporters"):
            defined = set(config.get(kind) or {})
            if kind in ("receivers", "exporters"):
                defined |= set(config.get("connectors") or {})
            for name in parts.get(kind, []):
                problems.require(
                    name in defined,
                    where,
                    f"pipeline {pipeline} names undefined {kind[:-1]} {name}",
                )
    protocols = (config.get("receivers") or {}).get("otlp", {}).get("protocols", {})
    for protocol, port in (("grpc", "4317"), ("http", "4318")):
        endpoint = (protocols.get(protocol) or {}).get("endpoint", "")
        problems.require(
            endpoint.endswith(f":{port}") and not endpoint.startswith(("localhost", "127.")),
            where,
            f"OTLP {protocol} is not received on {port} from other containers ({endpoint!r})",
        )
    services = set(load_yaml(DEPLOY / "compose.yaml")["services"])
    for name, exporter in (config.get("exporters") or {}).items():
        endpoint = (exporter or {}).get("endpoint", "")
        if endpoint:
            host = urllib.parse.urlsplit(endpoint if "//" in endpoint else f"//{endpoint}").hostname
            problems.require(
                host in services, where, f"exporter {name} sends to {host!r}, not a compose service"
            )
    problems.finish(f"{len(pipelines)} pipeline(s); every component they name is defined")


if __name__ == "__main__":
    main()
