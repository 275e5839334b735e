"""Checks rendered Kubernetes manifests (`kustomize build` output of infra/deploy/k8s/):
every object against the Kubernetes JSON schemas bundled in the kubernetes-validate package
(strict: unknown fields are errors), then the rules of this deployment: hardened pods,
probes, resources, one relay (projector replicas share partitions), references that resolve.

    python k8s_lint.py KUBERNETES_VERSION NAME=RENDERED.yaml...
"""

import sys

from kubernetes_validate import utils as kv

from lintlib import Problems, load_yaml_all

SERVICES = {"command-api", "query-api", "projector", "relay", "schema-registry"}
SINGLE_REPLICA = {"relay"}
SCALED = {"command-api", "query-api"}
# The processes with a Kafka client: the relay publishes, the projector consumes, the query
# API's admin console reads the projections' lag from the brokers.
KAFKA_CLIENTS = {"relay", "projector", "query-api"}


def validate_schema(problems, where, obj, version):
    try:
        kv.validate(obj, version, strict=True)
    except kv.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        problems.add(where, f"schema: {path}: {e.message}")
    except kv.SchemaNotFoundError as e:
        problems.add(where, f"schema: {e.message}")


def pod_template(obj):
    if obj["kind"] in ("Deployment", "Job"):
        return obj["spec"]["template"]
    return None


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def check_pod(problems, where, obj):
    template = pod_template(obj)
    spec = template["spec"]
    pod_sc = spec.get("securityContext", {})
    problems.require(
        pod_sc.get("runAsNonRoot") is True, where, "pod securityContext.runAsNonRoot is not true"
    )
    problems.require(
        pod_sc.get("runAsUser") == 10001, where, "pod securityContext.runAsUser is not 10001"
    )
    problems.require(
        pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
        where,
        "pod seccompProfile is not RuntimeDefault",
    )
    problems.require(
        spec.get("automountServiceAccountToken") is False, where, "service-account token mounted"
    )
    for c in spec["containers"]:
        cw = f"{where} container {c['name']}"
        sc = c.get("securityContext", {})
        problems.require(
            sc.get("readOnlyRootFilesystem") is True, cw, "root filesystem is writable"
        )
        problems.require(
            sc.get("allowPrivilegeEscalation") is False, cw, "privilege escalation allowed"
        )
        problems.require(
            "ALL" in sc.get("capabilities", {}).get("drop", []), cw, "capabilities not all dropped"
        )
        problems.require(sc.get("runAsNonRoot") is True, cw, "runAsNonRoot is not true")
        resources = c.get("resources", {})
        for kind in ("requests", "limits"):
            for res in ("cpu", "memory"):
                problems.require(res in resources.get(kind, {}), cw, f"no {kind}.{res}")
        image = c.get("image", "")
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
        problems.require(tag not in ("", "latest"), cw, f"image {image!r} has no pinned tag")
        if obj["kind"] == "Deployment":
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                got = c.get(probe, {}).get("httpGet", {}).get("path")
                problems.require(got == path, cw, f"{probe} path is {got!r}, not {path}")
                # /readyz gives its database check 2 s; Kubernetes' default probe timeout is 1 s.
                timeout = c.get(probe, {}).get("timeoutSeconds", 1)
                problems.require(timeout >= 3, cw, f"{probe} times out after {timeout} s, under 3")


def check_workloads(problems, name, objs):
    deployments = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Deployment"}
    problems.require(
        set(deployments) == SERVICES,
        name,
        f"Deployments are {sorted(deployments)}, not {sorted(SERVICES)}",
    )
    for d in SINGLE_REPLICA & set(deployments):
        problems.require(
            deployments[d]["spec"].get("replicas") == 1,
            f"{name} Deployment/{d}",
            "must run exactly one replica",
        )
    if "command-api" in deployments:
        env = env_of(deployments["command-api"]["spec"]["template"]["spec"]["containers"][0])
        problems.require(
            env.get("APP__RELAY__ENABLED") == "false",
            f"{name} Deployment/command-api",
            "runs the relay (APP__RELAY__ENABLED must be false)",
        )
    if "relay" in deployments:
        c = deployments["relay"]["spec"]["template"]["spec"]["containers"][0]
        problems.require(
            c.get("command", []) + c.get("args", []) == ["command-api", "relay"],
            f"{name} Deployment/relay",
            "does not run `command-api relay`",
        )
    # Where the brokers want a SASL login, every Kafka client must have its credentials.
    sasl = any(
        "APP__KAFKA__PROPERTIES__SASL_MECHANISMS" in (o.get("data") or {})
        for o in objs
        if o["kind"] == "ConfigMap"
    )
    for d in KAFKA_CLIENTS & set(deployments) if sasl else ():
        env = env_of(deployments[d]["spec"]["template"]["spec"]["containers"][0])
        for key in ("APP__KAFKA__PROPERTIES__SASL_USERNAME", "APP__KAFKA__PROPERTIES__SASL_PASSWORD"):
            problems.require(
                key in env, f"{name} Deployment/{d}", f"talks to SASL brokers without {key}"
            )
    jobs = [o for o in objs if o["kind"] == "Job"]
    migrate = [
        j
        for j in jobs
        for c in j["spec"]["template"]["spec"]["containers"]
        if c.get("command", []) + c.get("args", []) == ["command-api", "migrate"]
    ]
    problems.require(len(migrate) == 1, name, "no Job runs `command-api migrate`")


def labels_of_pods(objs):
    return [pod_template(o)["metadata"].get("labels", {}) for o in objs if pod_template(o)]


def selects(selector, labels_list):
    # A Service's selector is a plain map; a PodDisruptionBudget's a LabelSelector.
    structured = "matchLabels" in selector or "matchExpressions" in selector
    match = selector.get("matchLabels", {}) if structured else selector
    return any(all(labels.get(k) == v for k, v in match.items()) for labels in labels_list)


def check_references(problems, name, objs, secrets_rendered):
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    pods = labels_of_pods(objs)
    for svc in by_kind.get("Service", {}).values():
        problems.require(
            selects(svc["spec"]["selector"], pods),
            f"{name} Service/{svc['metadata']['name']}",
            "selects no pod",
        )
    for pdb in by_kind.get("PodDisruptionBudget", {}).values():
        problems.require(
            selects(pdb["spec"]["selector"], pods),
            f"{name} PodDisruptionBudget/{pdb['metadata']['name']}",
            "selects no pod",
        )
    hpa_targets = set()
    for hpa in by_kind.get("HorizontalPodAutoscaler", {}).values():
        target = hpa["spec"]["scaleTargetRef"]
        hpa_targets.add(target["name"])
        problems.require(
            target["name"] in by_kind.get(target["kind"], {}),
            f"{name} HorizontalPodAutoscaler/{hpa['metadata']['name']}",
            f"targets missing {target['kind']}/{target['name']}",
        )
    problems.require(
        hpa_targets == SCALED,
        name,
        f"autoscaled Deployments are {sorted(hpa_targets)}, not {sorted(SCALED)}",
    )
    configmaps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})
    for o in objs:
        template = pod_template(o)
        if not template:
            continue
        where = f"{name} {o['kind']}/{o['metadata']['name']}"
        spec = template["spec"]
        problems.require(
            spec.get("serviceAccountName") in by_kind.get("ServiceAccount", {}),
            where,
            "its service account is not in the render",
        )
        for c in spec["containers"]:
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    problems.require(
                        src["configMapRef"]["name"] in configmaps,
                        where,
                        f"ConfigMap {src['configMapRef']['name']} is not in the render",
                    )
            mounted = {m["name"] for m in c.get("volumeMounts", [])}
            volumes = {v["name"] for v in spec.get("volumes", [])}
            problems.require(
                mounted <= volumes, where, f"mounts undeclared volumes {sorted(mounted - volumes)}"
            )
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and secrets_rendered and not ref.get("optional"):
                    check_secret_key(problems, where, secrets, ref["name"], ref["key"])
        for v in spec.get("volumes", []):
            if "secret" in v and secrets_rendered:
                for item in v["secret"].get("items", []):
                    check_secret_key(
                        problems, where, secrets, v["secret"]["secretName"], item["key"]
                    )
    config = next(iter(configmaps.values()), {}).get("data", {})
    problems.require(
        config.get("APP__DATABASE__MIGRATE_ON_START") == "false",
        name,
        "the services would migrate on start",
    )
    deny = [
        p
        for p in by_kind.get("NetworkPolicy", {}).values()
        if p["spec"]["podSelector"] == {}
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    problems.require(deny, name, "no default-deny NetworkPolicy")


def check_secret_key(problems, where, secrets, secret, key):
    if problems.require(secret in secrets, where, f"Secret {secret} is not in the render"):
        keys = set(secrets[secret].get("data", {})) | set(secrets[secret].get("stringData", {}))
        problems.require(key in keys, where, f"Secret {secret} has no key {key}")


def main():
    version, renders = sys.argv[1], sys.argv[2:]
    problems = Problems("k8s")
    count = 0
    for arg in renders:
        name, path = arg.split("=", 1)
        objs = load_yaml_all(path)
        count += len(objs)
        for o in objs:
            validate_schema(
                problems, f"{name} {o.get('kind')}/{o.get('metadata', {}).get('name')}", o, version
            )
            if pod_template(o):
                check_pod(problems, f"{name} {o['kind']}/{o['metadata']['name']}", o)
        check_workloads(problems, name, objs)
        # An overlay that generates its secrets must generate every key the pods use.
        check_references(
            problems, name, objs, secrets_rendered=any(o["kind"] == "Secret" for o in objs)
        )
        if name == "production":
            for o in objs:
                if o["kind"] == "Deployment" and o["metadata"]["name"] == "command-api":
                    env = env_of(o["spec"]["template"]["spec"]["containers"][0])
                    problems.require(
                        env.get("APP__AUTH__GENERATE_KEY") == "false",
                        "production Deployment/command-api",
                        "generates its own signing key",
                    )
    problems.finish(
        f"{count} objects in {len(renders)} renders valid against Kubernetes {version} (strict)"
        " and the deployment rules"
    )


if __name__ == "__main__":
    main()
