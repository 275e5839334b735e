"""Checks infra/deploy/compose.yaml: interpolated with the example .env, it must validate
against the Compose Specification's JSON schema (from the compose-go module), and its
references must resolve: depends_on, secrets, volumes, mounted files, healthchecks behind
`service_healthy`, the Prometheus targets, and the settings every service of ours needs.

    python compose_lint.py COMPOSE_SPEC_JSON
"""

import re
import sys
import urllib.parse

import jsonschema

from lintlib import DEPLOY, Problems, load_yaml, rel

COMPOSE = DEPLOY / "compose.yaml"
VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])((?:[^{}]|\{[^{}]*\})*))?\}")


def example_env():
    env = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


def interpolate(value, env, problems):
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR:?error}` and `$$`."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, problems) for v in value]
    if not isinstance(value, str):
        return value

    def one(match):
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1), match.group(2), match.group(3)
        set_ = env.get(name)
        if op in (":?", "?") and not set_:
            problems.add(rel(COMPOSE), f"${{{name}}} is required but .env.example does not set it")
            return ""
        if op in (":-", "-") and not set_:
            return arg
        return set_ or ""

    return VARIABLE.sub(one, value)


def app_services(services):
    """The services that run our image."""
    image = services["command-api"]["image"]
    return {name: s for name, s in services.items() if s.get("image") == image}


def check_references(problems, compose):
    where = rel(COMPOSE)
    services = compose["services"]
    volumes = set(compose.get("volumes") or {})
    secrets = compose.get("secrets") or {}
    writer = (DEPLOY / "secrets.sh").read_text()
    for name, secret in secrets.items():
        path = secret.get("file", "")
        problems.require(
            path.startswith("./secrets/"),
            where,
            f"secret {name}: {path!r} is not under ./secrets/ (git-ignored)",
        )
        problems.require(
            path.removeprefix("./") in writer,
            where,
            f"secret {name}: secrets.sh does not write {path}",
        )
    for name, svc in services.items():
        sw = f"{where} service {name}"
        for dep, cond in (svc.get("depends_on") or {}).items():
            if not problems.require(dep in services, sw, f"depends on unknown service {dep}"):
                continue
            condition = cond.get("condition") if isinstance(cond, dict) else "service_started"
            if condition == "service_healthy":
                problems.require(
                    "healthcheck" in services[dep],
                    sw,
                    f"waits for {dep} to be healthy, which has no healthcheck",
                )
            if condition == "service_completed_successfully":
                problems.require(
                    services[dep].get("restart") == "no",
                    sw,
                    f"waits for {dep} to complete, which restarts",
                )
        for s in svc.get("secrets") or []:
            source = s if isinstance(s, str) else s["source"]
            problems.require(source in secrets, sw, f"uses undeclared secret {source}")
        for mount in svc.get("volumes") or []:
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount.get("source", "")
            if source.startswith((".", "/")):
                problems.require(
                    (COMPOSE.parent / source).exists(),
                    sw,
                    f"mounts {source}, which is not in the repository",
                )
            else:
                problems.require(source in volumes, sw, f"mounts undeclared volume {source}")
    for name, svc in app_services(services).items():
        sw = f"{where} service {name}"
        env = svc.get("environment") or {}
        problems.require(
            env.get("OTEL_SERVICE_NAME") == name, sw, "OTEL_SERVICE_NAME is not the service's name"
        )
        problems.require(
            env.get("APP__DATABASE__MIGRATE_ON_START") == "false", sw, "would migrate on start"
        )
        endpoint = urllib.parse.urlsplit(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", ""))
        problems.require(
            endpoint.hostname in services,
            sw,
            f"OTLP endpoint host {endpoint.hostname!r} is not a service",
        )
        for key, value in env.items():
            if key.endswith("_FILE") and key.startswith("APP__"):
                secret = str(value).removeprefix("/run/secrets/")
                problems.require(
                    secret in (svc.get("secrets") or []),
                    sw,
                    f"{key} names {value}, a secret it does not mount",
                )
    migrate = [n for n, s in services.items() if s.get("command") == ["command-api", "migrate"]]
    problems.require(len(migrate) == 1, where, "no service runs `command-api migrate`")


def check_prometheus_targets(problems, services):
    path = DEPLOY / "prometheus" / "prometheus.yml"
    config = load_yaml(path)
    hosts = []
    for job in config.get("scrape_configs", []):
        for static in job.get("static_configs", []):
            hosts += [t.rsplit(":", 1)[0] for t in static.get("targets", [])]
        for dns in job.get("dns_sd_configs", []):
            hosts += dns.get("names", [])
    for host in hosts:
        problems.require(
            host in services, rel(path), f"scrapes {host}, which is not a compose service"
        )
    for name, svc in app_services(services).items():
        if svc.get("restart") != "no":
            problems.require(name in hosts, rel(path), f"does not scrape {name}")


def main():
    schema_path = sys.argv[1]
    problems = Problems("compose")
    raw = load_yaml(COMPOSE)
    compose = interpolate(raw, example_env(), problems)
    schema = load_yaml(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    for error in sorted(validator.iter_errors(compose), key=lambda e: list(e.path)):
        location = "/".join(str(p) for p in error.absolute_path) or "(top)"
        problems.add(rel(COMPOSE), f"schema: {location}: {error.message}")
    if isinstance(compose, dict) and "services" in compose:
        check_references(problems, compose)
        check_prometheus_targets(problems, compose["services"])
    problems.finish(
        f"{len(compose.get('services', {}))} services valid against the Compose Specification;"
        " references resolve"
    )


if __name__ == "__main__":
    main()
