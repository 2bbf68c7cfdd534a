"""Checks on rendered Helm output for tests/chart/run (run with the .tools venv's Python).

Subcommands:
  validate VERSION FILE...      every object through kubernetes-validate --strict (the library
                                behind the CLI), for one Kubernetes version; CRD kinds without an
                                offline schema are skipped by name (SKIPPED_GROUPS), nothing else.
  webhook FILE [options]        assertions on the ValidatingWebhookConfiguration.
  rbac FILE [options]           the ClusterRole grants exactly what the enabled features need.
  workload FILE                 Deployment, PDB and pod security settings the chart promises.
  extract FILE DIR              the rendered config.yaml, policies and keys into DIR, with every
                                /etc/portcullis/ path rewritten to DIR/etc/portcullis/, for
                                `portcullis config validate`.
  certs                         self-managed certificate reuse and rotation (drives helm).
  serve FILE                    runs $PORTCULLIS_BIN serve with the rendered config and the
                                Helm-generated certificate, calls /validate over TLS trusting only
                                the rendered caBundle with the Service's DNS name.
  deploy CASE                   prints deploy/ content for CASE from a helm template on stdin.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

# Kinds from CRDs: kubernetes-validate bundles only the built-in Kubernetes schemas, and no CRD
# schema can be fetched offline. These groups are skipped (and the skip is printed); any other
# kind without a schema is a failure.
SKIPPED_GROUPS = {"cert-manager.io", "monitoring.coreos.com"}

FAILURES: list[str] = []


def fail(message: str) -> None:
    FAILURES.append(message)
    print(f"FAIL: {message}")


def check(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


def load(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [
        d
        for d in docs
        if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = find(docs, kind, name)
    if len(found) != 1:
        raise SystemExit(f"FAIL: expected exactly one {kind} {name or ''}, found {len(found)}")
    return found[0]


def group_of(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


# --- validate ------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> None:
    import kubernetes_validate as kv

    checked = skipped = 0
    for path in args.files:
        for doc in load(path):
            what = f"{Path(path).name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            if group_of(doc.get("apiVersion", "")) in SKIPPED_GROUPS:
                skipped += 1
                print(f"skip (CRD, no offline schema): {what} ({doc['apiVersion']})")
                continue
            try:
                kv.validate(doc, args.version, strict=True)
                checked += 1
            except kv.SchemaNotFoundError:
                fail(f"{what}: no schema for {doc.get('apiVersion')} in Kubernetes {args.version}")
            except kv.ValidationError as e:
                location = "/".join(str(p) for p in e.path)
                fail(f"{what} against Kubernetes {args.version}: {location}: {e.message}")
    print(f"kubernetes-validate --strict {args.version}: {checked} objects valid, {skipped} CRD objects skipped")


# --- webhook -------------------------------------------------------------------------------

POD_TEMPLATE_RESOURCES = {
    ("", "pods"),
    ("", "pods/ephemeralcontainers"),
    ("", "podtemplates"),
    ("", "replicationcontrollers"),
    ("apps", "replicasets"),
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
}


def cmd_webhook(args: argparse.Namespace) -> None:
    docs = load(args.file)
    config = one(docs, "ValidatingWebhookConfiguration")
    webhooks = config["webhooks"]
    check(len(webhooks) == 1, f"one webhook expected, found {len(webhooks)}")
    hook = webhooks[0]
    name = hook["name"]
    check(hook.get("admissionReviewVersions") == ["v1"], f"{name}: admissionReviewVersions must be [v1]")
    check(hook.get("sideEffects") == "NoneOnDryRun", f"{name}: sideEffects must be NoneOnDryRun, is {hook.get('sideEffects')}")
    check(hook.get("failurePolicy") == args.failure_policy, f"{name}: failurePolicy {hook.get('failurePolicy')} != {args.failure_policy}")
    check(hook.get("timeoutSeconds") == args.timeout, f"{name}: timeoutSeconds {hook.get('timeoutSeconds')} != {args.timeout}")

    covered = set()
    custom_rules = set()
    for rule in hook["rules"]:
        check(set(rule["operations"]) >= {"CREATE", "UPDATE"}, f"{name}: rule {rule} must cover CREATE and UPDATE")
        built_in = all((g, r) in POD_TEMPLATE_RESOURCES for g in rule["apiGroups"] for r in rule["resources"])
        if built_in:
            check(rule.get("apiVersions") == ["v1"], f"{name}: rule {rule} must be for v1")
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                covered.add((group, resource))
                if not built_in:
                    for version in rule["apiVersions"]:
                        custom_rules.add(f"{group}/{version}/{resource}")
    missing = POD_TEMPLATE_RESOURCES - covered
    check(not missing, f"{name}: rules miss {sorted(missing)}")
    # Custom kinds: the rules beyond the built-in ones are exactly the configuration's
    # workloads.custom (a kind configured without a rule would never be sent; a rule without
    # configuration would be admitted as a kind without pods).
    config_map = next(d for d in find(docs, "ConfigMap") if d["metadata"]["name"].endswith("-config"))
    rendered = yaml.safe_load(config_map["data"]["config.yaml"]) or {}
    configured = {
        f"{c['group']}/{c.get('version', '*')}/{c['resource']}"
        for c in (rendered.get("workloads") or {}).get("custom") or []
    }
    check(custom_rules == configured, f"{name}: custom rules {sorted(custom_rules)} != workloads.custom {sorted(configured)}")
    check(custom_rules == set(args.custom), f"{name}: custom rules {sorted(custom_rules)} != expected {sorted(args.custom)}")
    check(("", "pods/ephemeralcontainers") in covered, f"{name}: pods/ephemeralcontainers rule missing")

    service = hook["clientConfig"]["service"]
    check(service["namespace"] == args.namespace, f"{name}: clientConfig.service.namespace {service['namespace']} != {args.namespace}")
    check(service.get("path") == "/validate", f"{name}: clientConfig path must be /validate")
    services = find(docs, "Service", service["name"])
    check(len(services) == 1, f"{name}: Service {service['name']} is not rendered")
    if services:
        ports = [p["port"] for p in services[0]["spec"]["ports"]]
        check(service.get("port", 443) in ports, f"{name}: Service has no port {service.get('port', 443)}")

    expressions = hook["namespaceSelector"]["matchExpressions"]
    excluded = set()
    for e in expressions:
        if e["key"] == "kubernetes.io/metadata.name" and e["operator"] == "NotIn":
            excluded |= set(e["values"])
    for ns in ["kube-system", args.namespace, *args.exclude]:
        check(ns in excluded, f"{name}: namespace {ns} is not excluded by kubernetes.io/metadata.name NotIn (excluded: {sorted(excluded)})")

    annotations = config["metadata"].get("annotations") or {}
    ca_bundle = hook["clientConfig"].get("caBundle")
    if args.cert_mode == "selfManaged":
        check(bool(ca_bundle), f"{name}: selfManaged mode needs a caBundle")
        secret = one(docs, "Secret")
        check(secret["data"]["ca.crt"] == ca_bundle, f"{name}: caBundle differs from the Secret's ca.crt")
        check("cert-manager.io/inject-ca-from" not in annotations, f"{name}: inject-ca-from in selfManaged mode")
    else:
        check(not ca_bundle, f"{name}: certManager mode must leave caBundle to the cainjector")
        certificate_name = annotations.get("cert-manager.io/inject-ca-from", "")
        check(certificate_name.startswith(f"{args.namespace}/"), f"{name}: cert-manager.io/inject-ca-from is {certificate_name!r}")
        certificate = find(docs, "Certificate", certificate_name.split("/")[-1])
        check(len(certificate) == 1, f"{name}: inject-ca-from names no rendered Certificate")
        if certificate:
            deployment = one(docs, "Deployment")
            secrets = [v["secret"]["secretName"] for v in deployment["spec"]["template"]["spec"]["volumes"] if "secret" in v]
            check(certificate[0]["spec"]["secretName"] in secrets, f"{name}: the Certificate's Secret is not mounted")
            dns = f"{service['name']}.{args.namespace}.svc"
            check(dns in certificate[0]["spec"]["dnsNames"], f"{name}: Certificate lacks {dns}")

    if args.match_conditions:
        check(len(hook.get("matchConditions") or []) == args.match_conditions, f"{name}: expected {args.match_conditions} matchConditions")
    else:
        check("matchConditions" not in hook, f"{name}: unexpected matchConditions")
    # Digest pinning: the MutatingWebhookConfiguration exists exactly when the server's switch
    # is on, and reaches the same Service, CA and namespaces as the validating webhook.
    mutating = find(docs, "MutatingWebhookConfiguration")
    pinning_on = bool((rendered.get("pinning") or {}).get("enabled"))
    if not args.pinning:
        check(not mutating, f"{name}: MutatingWebhookConfiguration rendered without pinning.enabled")
        check(not pinning_on, f"{name}: config.pinning.enabled without the mutating webhook")
    else:
        check(pinning_on, f"{name}: pinning.enabled did not set config.pinning.enabled")
        check(len(mutating) == 1, f"{name}: one MutatingWebhookConfiguration expected, found {len(mutating)}")
        for m in mutating[:1]:
            check(m["metadata"]["name"] == config["metadata"]["name"], "mutating webhook: name differs from the validating one")
            check((m["metadata"].get("annotations") or {}) == annotations, "mutating webhook: annotations (CA injection) differ")
            check(len(m["webhooks"]) == 1, "mutating webhook: one webhook expected")
            pin = m["webhooks"][0]
            pname = pin["name"]
            check(pin.get("admissionReviewVersions") == ["v1"], f"{pname}: admissionReviewVersions must be [v1]")
            check(pin.get("sideEffects") == "None", f"{pname}: sideEffects must be None, is {pin.get('sideEffects')}")
            check(pin.get("reinvocationPolicy") == "IfNeeded", f"{pname}: reinvocationPolicy must be IfNeeded")
            check(pin.get("failurePolicy") == args.pinning_failure_policy, f"{pname}: failurePolicy {pin.get('failurePolicy')} != {args.pinning_failure_policy}")
            check(pin.get("timeoutSeconds") == args.pinning_timeout, f"{pname}: timeoutSeconds {pin.get('timeoutSeconds')} != {args.pinning_timeout}")
            pin_service = pin["clientConfig"]["service"]
            check(pin_service.get("path") == "/mutate", f"{pname}: clientConfig path must be /mutate")
            check({k: v for k, v in pin_service.items() if k != "path"} == {k: v for k, v in service.items() if k != "path"},
                  f"{pname}: service {pin_service} differs from the validating webhook's {service}")
            check(pin["clientConfig"].get("caBundle") == ca_bundle, f"{pname}: caBundle differs from the validating webhook's")
            rules = sorted((tuple(r["apiGroups"]), tuple(r["apiVersions"]), tuple(r["operations"]), tuple(r["resources"])) for r in pin["rules"])
            expected = sorted([(("",), ("v1",), ("CREATE",), ("pods",)), (("",), ("v1",), ("UPDATE",), ("pods/ephemeralcontainers",))])
            check(rules == expected, f"{pname}: rules {rules} != Pods only {expected}")
            for key in ("namespaceSelector", "objectSelector", "matchConditions"):
                check(pin.get(key) == hook.get(key), f"{pname}: {key} differs from the validating webhook's")
        # Uninstall must remove everything: no object of the chart is a hook or kept on uninstall.
    for doc in docs:
        doc_annotations = doc.get("metadata", {}).get("annotations") or {}
        for helm_hook in ("helm.sh/hook", "helm.sh/resource-policy"):
            check(helm_hook not in doc_annotations, f"{doc['kind']}/{doc['metadata']['name']}: {helm_hook} would survive helm uninstall")
    print(f"webhook {name}: {args.failure_policy}, {args.timeout}s, {len(covered)} resources, custom {sorted(custom_rules)}, excludes {sorted(excluded)}")


# --- rbac ----------------------------------------------------------------------------------


def grants(role: dict) -> dict[tuple[str, str], set[str]]:
    """Grants on every object of a resource (rules without resourceNames)."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role.get("rules") or []:
        if rule.get("resourceNames"):
            continue
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def named_grants(role: dict) -> dict[tuple[str, str], tuple[set[str], list[str]]]:
    """Grants limited to named objects (rules with resourceNames)."""
    out: dict[tuple[str, str], tuple[set[str], list[str]]] = {}
    for rule in role.get("rules") or []:
        if not rule.get("resourceNames"):
            continue
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                out[(group, resource)] = (set(rule["verbs"]), list(rule["resourceNames"]))
    return out


def cmd_rbac(args: argparse.Namespace) -> None:
    docs = load(args.file)
    if args.none:
        check(not find(docs, "ClusterRole") and not find(docs, "Role"), "rbac.create=false still renders roles")
        return
    cluster = grants(one(docs, "ClusterRole"))
    role = grants(one(docs, "Role"))
    for everything in (cluster, role):
        for (group, resource), verbs in everything.items():
            check("*" not in verbs and resource != "*" and group != "*", f"wildcard in RBAC: {group}/{resource} {verbs}")
    check(cluster.get(("", "pods")) == {"get", "list", "watch"}, f"pods: {cluster.get(('', 'pods'))}")
    check(cluster.get(("", "namespaces")) == {"get", "list", "watch"}, f"namespaces: {cluster.get(('', 'namespaces'))}")
    if args.pull_secrets:
        check(cluster.get(("", "secrets")) == {"get"}, f"secrets must be get only: {cluster.get(('', 'secrets'))}")
        check(cluster.get(("", "serviceaccounts")) == {"get"}, f"serviceaccounts must be get only")
    else:
        check(("", "secrets") not in cluster and ("", "secrets") not in role, "secrets granted without rbac.pullSecrets")
        check(("", "serviceaccounts") not in cluster, "serviceaccounts granted without rbac.pullSecrets")
    reports = cluster.get(("aquasecurity.github.io", "vulnerabilityreports"))
    if args.trivy_operator:
        check(reports == {"list", "watch"}, f"vulnerabilityreports must be list, watch: {reports}")
    else:
        check(reports is None, "vulnerabilityreports granted without config.scans.trivyOperator.enabled")
    policy_reports = cluster.get(("wgpolicyk8s.io", "policyreports"))
    check(bool(policy_reports) == args.policy_reports, f"policyreports granted: {policy_reports}")
    write_reports = {"get", "list", "watch", "create", "update", "patch", "delete"}
    for resource in ("reports", "clusterreports"):
        open_reports = cluster.get(("openreports.io", resource))
        if args.open_reports:
            check(open_reports == write_reports, f"openreports.io {resource}: {open_reports}")
        else:
            check(open_reports is None, f"openreports.io {resource} granted without rbac.openReports: {open_reports}")
    # Re-judging watches pods and reads their owners up to the controller a result names.
    for group, resource in (("apps", "replicasets"), ("batch", "jobs")):
        owners = cluster.get((group, resource))
        if args.rejudge:
            check(owners == {"get", "list", "watch"}, f"{group}/{resource} must be get, list, watch: {owners}")
        else:
            check(owners is None, f"{group}/{resource} granted without config.rejudge: {owners}")
    # Events on re-judged workloads go to the workloads' namespaces: cluster-wide.
    workload_events = cluster.get(("events.k8s.io", "events"))
    if args.events:
        check(args.rejudge, "--events needs --rejudge (Events come from re-judging)")
        check(workload_events == {"create", "patch"}, f"events.k8s.io events (cluster) must be create, patch: {workload_events}")
    else:
        check(workload_events is None, f"events.k8s.io events granted cluster-wide without rejudge.events: {workload_events}")
    check(("", "events") not in cluster, f"core events granted cluster-wide: {cluster.get(('', 'events'))}")
    named_cluster = named_grants(one(docs, "ClusterRole"))
    named_role = named_grants(one(docs, "Role"))
    webhooks = named_cluster.get(("admissionregistration.k8s.io", "validatingwebhookconfigurations"))
    mutating = named_cluster.get(("admissionregistration.k8s.io", "mutatingwebhookconfigurations"))
    secrets = named_role.get(("", "secrets"))
    pinning = bool(find(docs, "MutatingWebhookConfiguration"))
    if args.rotation and pinning:
        check(mutating == ({"get", "update"}, [args.rotation]), f"rotation: mutating webhook grant {mutating}")
        container_args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
        check(f"--mutating-webhook-configuration={args.rotation}" in container_args, f"rotation of the pinning webhook's caBundle missing: {container_args}")
    else:
        check(mutating is None, f"mutating webhook grant without pinning and rotation: {mutating}")
    if args.rotation:
        check(webhooks == ({"get", "update"}, [args.rotation]), f"rotation: webhook grant {webhooks}")
        check(secrets == ({"get", "update"}, [f"{args.rotation}-tls"]), f"rotation: Secret grant {secrets}")
        deployment = one(docs, "Deployment")
        container_args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        check(f"--webhook-configuration={args.rotation}" in container_args, f"rotation args missing: {container_args}")
        check(any(a.startswith("--cert-secret=") and a.endswith(f"/{args.rotation}-tls") for a in container_args),
              f"--cert-secret missing: {container_args}")
    else:
        check(webhooks is None and secrets is None, f"rotation grants without rotation: {webhooks} {secrets}")
    check(not (set(named_cluster) | set(named_role)) - {
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"), ("", "secrets")},
        f"unexpected named grants: {named_cluster} {named_role}")
    check(role.get(("coordination.k8s.io", "leases")) is not None, "leases missing from the Role")
    check(role.get(("", "events")) == {"create", "patch"}, f"events: {role.get(('', 'events'))}")
    print(f"rbac: {len(cluster)} cluster-wide grants, {len(role)} namespaced grants")


# --- workload ------------------------------------------------------------------------------


def cmd_workload(args: argparse.Namespace) -> None:
    docs = load(args.file)
    deployment = one(docs, "Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    check(spec["replicas"] == args.replicas, f"replicas {spec['replicas']} != {args.replicas}")
    pdbs = find(docs, "PodDisruptionBudget")
    if args.pdb:
        check(len(pdbs) == 1 and pdbs[0]["spec"].get("maxUnavailable") == 1 and "minAvailable" not in pdbs[0]["spec"], "PDB must be maxUnavailable: 1")
    else:
        check(not pdbs, "PDB rendered although disabled")
    check(pod["securityContext"].get("runAsNonRoot") is True, "pod runAsNonRoot")
    check(pod["securityContext"].get("seccompProfile", {}).get("type") == "RuntimeDefault", "pod seccomp RuntimeDefault")
    check(bool(pod.get("topologySpreadConstraints")), "no topologySpreadConstraints")
    check(bool(pod.get("affinity", {}).get("podAntiAffinity")), "no podAntiAffinity")
    (container,) = pod["containers"]
    sc = container["securityContext"]
    check(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
    check(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation false")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], "drop ALL")
    check(sc.get("runAsNonRoot") is True and sc.get("runAsUser", 0) > 0, "non-root UID")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    check(ports == {"webhook": 8443, "probe": 8081}, f"ports {ports}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        check(get["path"] == path and get["port"] == "probe", f"{probe} must be {path} on the probe port")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    check("emptyDir" in volumes.get(mounts.get("/tmp", ""), {}), "/tmp must be an emptyDir")
    check(bool(container.get("resources", {}).get("requests")), "resource requests")
    argv = container["args"]
    check(argv[0] == "serve", "the container runs `portcullis serve`")
    for flag in ("--config=", "--tls-cert=", "--tls-key=", "--listen=0.0.0.0:8443", "--probe-listen=0.0.0.0:8081"):
        check(any(a.startswith(flag) for a in argv), f"serve flag {flag} missing")
    service_ports = {p["name"] for s in find(docs, "Service") for p in s["spec"]["ports"]}
    for monitor in find(docs, "ServiceMonitor"):
        for endpoint in monitor["spec"]["endpoints"]:
            check(endpoint["port"] in service_ports, f"ServiceMonitor scrapes port {endpoint['port']!r}, not on the Service")
    policies = find(docs, "NetworkPolicy")
    if args.network_policy:
        check(len(policies) == 1, "one NetworkPolicy expected")
        if policies:
            np = policies[0]["spec"]
            check(set(np["policyTypes"]) == {"Ingress", "Egress"}, "NetworkPolicy must restrict ingress and egress")
            ingress_ports = {p["port"] for rule in np["ingress"] for p in rule["ports"]}
            check(ingress_ports == {"webhook", "probe"}, f"ingress ports {ingress_ports}")
            egress_ports = {(p.get("protocol"), p["port"]) for rule in np["egress"] for p in rule["ports"]}
            for needed in (("UDP", 53), ("TCP", 53), ("TCP", 443)):
                check(needed in egress_ports, f"egress lacks {needed}")
    else:
        check(not policies, "NetworkPolicy rendered although disabled")
    print(f"workload: {spec['replicas']} replicas, hardened pod, probes on 8081, NetworkPolicy {'on' if policies else 'off'}")


# --- extract -------------------------------------------------------------------------------


def cmd_extract(args: argparse.Namespace) -> None:
    docs = load(args.file)
    out = Path(args.dir)
    root = out / "etc" / "portcullis"
    out.mkdir(parents=True, exist_ok=True)
    maps = {d["metadata"]["name"]: d for d in find(docs, "ConfigMap")}
    config_map = next(d for n, d in maps.items() if n.endswith("-config"))
    for suffix, folder in (("-policies", "policies"), ("-keys", "keys")):
        for name, doc in maps.items():
            if name.endswith(suffix):
                (root / folder).mkdir(parents=True, exist_ok=True)
                for file, content in doc["data"].items():
                    (root / folder / file).write_text(content, encoding="utf-8")
    text = config_map["data"]["config.yaml"].replace("/etc/portcullis/", f"{root}/")
    (out / "config.yaml").write_text(text, encoding="utf-8")
    print(out / "config.yaml")


# --- certs ---------------------------------------------------------------------------------


def helm_template(*extra: str) -> list[dict]:
    helm = os.environ.get("HELM", "helm")
    out = subprocess.run(
        [helm, "template", "portcullis", os.environ["CHART"], "--namespace", "portcullis", *extra],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def pems(b64: str) -> list[str]:
    return re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", base64.b64decode(b64).decode(), re.S)


def openssl_verify(tmp: Path, bundle_b64: str, cert_b64: str) -> bool:
    (tmp / "bundle.pem").write_bytes(base64.b64decode(bundle_b64))
    (tmp / "leaf.pem").write_bytes(base64.b64decode(cert_b64))
    result = subprocess.run(["openssl", "verify", "-CAfile", str(tmp / "bundle.pem"), str(tmp / "leaf.pem")], capture_output=True, text=True)
    return result.returncode == 0


def render_with_existing(tmp: Path, secret: dict) -> tuple[dict, str]:
    values = tmp / "lookup.yaml"
    values.write_text(yaml.safe_dump({"certificates": {"selfManaged": {"lookupOverride": secret}}}))
    docs = helm_template("-f", str(values))
    webhook = one(docs, "ValidatingWebhookConfiguration")
    return one(docs, "Secret"), webhook["webhooks"][0]["clientConfig"]["caBundle"]


def cmd_certs(_: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp())
    try:
        first = helm_template()
        secret = one(first, "Secret")
        bundle = one(first, "ValidatingWebhookConfiguration")["webhooks"][0]["clientConfig"]["caBundle"]
        check(secret["type"] == "kubernetes.io/tls", "Secret type kubernetes.io/tls")
        check(set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}, f"Secret keys {sorted(secret['data'])}")
        check(len(pems(bundle)) == 1, "a fresh install trusts exactly one CA")
        if shutil.which("openssl"):
            check(openssl_verify(tmp, bundle, secret["data"]["tls.crt"]), "the serving cert does not verify against the caBundle")
        not_after = dt.datetime.fromisoformat(secret["metadata"]["annotations"]["portcullis.io/not-after"].replace("Z", "+00:00"))
        days = (not_after - dt.datetime.now(dt.timezone.utc)).days
        check(363 <= days <= 365, f"not-after is {days} days away, expected the 365-day default")

        # An upgrade with a healthy Secret in the cluster reuses it byte for byte.
        reused, reused_bundle = render_with_existing(tmp, secret)
        check(reused["data"] == secret["data"], "an upgrade with a valid Secret must reuse the certificate")
        check(reused_bundle == bundle, "an upgrade with a valid Secret must keep the caBundle")

        # Close to expiry: a new pair, and the caBundle trusts the new CA and the old one.
        expiring = json.loads(json.dumps(secret))
        soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
        expiring["metadata"]["annotations"]["portcullis.io/not-after"] = soon
        rotated, rotated_bundle = render_with_existing(tmp, expiring)
        check(rotated["data"]["tls.crt"] != secret["data"]["tls.crt"], "a certificate 10 days from expiry must be renewed")
        check(rotated["data"]["ca.crt"] == rotated_bundle, "after rotation the caBundle must equal the Secret's ca.crt")
        old_ca = pems(bundle)[0]
        new_cas = pems(rotated_bundle)
        check(len(new_cas) == 2 and new_cas[1] == old_ca and new_cas[0] != old_ca, "rotation must trust the new CA first and keep the previous CA")
        if shutil.which("openssl"):
            check(openssl_verify(tmp, rotated_bundle, rotated["data"]["tls.crt"]), "the new serving cert must verify against the new caBundle")
            check(openssl_verify(tmp, rotated_bundle, secret["data"]["tls.crt"]), "the old serving cert (pods not yet reloaded) must still verify")

        # A Secret for other DNS names (e.g. a renamed release) is replaced.
        renamed = json.loads(json.dumps(secret))
        renamed["metadata"]["annotations"]["portcullis.io/dns-names"] = "other.example.svc"
        replaced, _ = render_with_existing(tmp, renamed)
        check(replaced["data"]["tls.crt"] != secret["data"]["tls.crt"], "a Secret for other DNS names must be regenerated")

        # A Secret missing a key is replaced, not half reused.
        broken = json.loads(json.dumps(secret))
        del broken["data"]["tls.key"]
        replaced, _ = render_with_existing(tmp, broken)
        check("tls.key" in replaced["data"] and replaced["data"]["tls.crt"] != secret["data"]["tls.crt"], "a Secret missing tls.key must be regenerated")
        print(f"certs: fresh install, reuse, rotation 10 days before expiry (2 CAs trusted), renamed and broken Secrets: checked")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- serve ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_api_server(objects: dict[str, dict]):
    """A loopback stand-in for the kube-apiserver (none can run here) that answers GETs of the
    given objects by path, 404 otherwise, and records every request. Returns (url, log, stop)."""
    import http.server
    import threading

    log: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            log.append(f"{self.command} {self.path}")
            path = self.path.split("?")[0]
            found = objects.get(path) if self.command == "GET" else None
            body = json.dumps(found if found else {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "reason": "NotFound", "code": 404, "message": f"{path} not found"}).encode()
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PUT = do_POST = do_PATCH = _answer

        def log_message(self, *_args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", log, server.shutdown


def cmd_serve(args: argparse.Namespace) -> None:
    binary = os.environ["PORTCULLIS_BIN"]
    docs = load(args.file)
    secret = one(docs, "Secret")
    hook = one(docs, "ValidatingWebhookConfiguration")["webhooks"][0]
    service = hook["clientConfig"]["service"]
    host = f"{service['name']}.{service['namespace']}.svc"
    tmp = Path(tempfile.mkdtemp())
    process = None
    try:
        for key in ("tls.crt", "tls.key"):
            (tmp / key).write_bytes(base64.b64decode(secret["data"][key]))
        (tmp / "bundle.pem").write_bytes(base64.b64decode(hook["clientConfig"]["caBundle"]))
        subprocess.run([sys.executable, __file__, "extract", args.file, str(tmp / "cfg")], check=True, capture_output=True)
        port, probe = free_port(), free_port()
        # The container's own arguments, with the mounted paths and listen addresses mapped here.
        container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        mapping = {
            "--config=": f"--config={tmp / 'cfg' / 'config.yaml'}",
            "--tls-cert=": f"--tls-cert={tmp / 'tls.crt'}",
            "--tls-key=": f"--tls-key={tmp / 'tls.key'}",
            "--listen=": f"--listen=127.0.0.1:{port}",
            "--probe-listen=": f"--probe-listen=127.0.0.1:{probe}",
        }
        argv = [next((v for k, v in mapping.items() if a.startswith(k)), a) for a in container["args"]]
        env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
        env["KUBECONFIG"] = str(tmp / "no-kubeconfig")
        rotation = next((a.split("=", 1)[1] for a in argv if a.startswith("--cert-secret=")), None)
        api_log: list[str] = []
        if rotation:
            # Run-time rotation reads the Secret and the webhook configuration: serve them as
            # rendered from a stand-in API server, through a kubeconfig pointing at it.
            namespace, secret_name = rotation.split("/")
            webhook_name = next(a.split("=", 1)[1] for a in argv if a.startswith("--webhook-configuration="))
            configuration = one(docs, "ValidatingWebhookConfiguration")
            check(configuration["metadata"]["name"] == webhook_name, "--webhook-configuration names another object")
            check(secret["metadata"]["name"] == secret_name, "--cert-secret names another Secret")
            url, api_log, stop_api = fake_api_server({
                f"/api/v1/namespaces/{namespace}/secrets/{secret_name}": secret,
                f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{webhook_name}": configuration,
            })
            (tmp / "kubeconfig").write_text(yaml.safe_dump({
                "apiVersion": "v1", "kind": "Config", "current-context": "test",
                "clusters": [{"name": "test", "cluster": {"server": url}}],
                "users": [{"name": "test", "user": {}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": namespace}}],
            }))
            env["KUBECONFIG"] = str(tmp / "kubeconfig")
        process = subprocess.Popen(
            [binary, *argv], stdout=subprocess.DEVNULL, stderr=open(tmp / "serve.log", "wb"), env=env,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{probe}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                fail(f"portcullis serve never got ready:\n{(tmp / 'serve.log').read_text()}")
                return
            time.sleep(0.1)
        context = ssl.create_default_context(cafile=str(tmp / "bundle.pem"))
        body = Path(args.review).read_bytes()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(
                    f"POST /validate?timeout=5s HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
                )
                answer = b""
                while chunk := tls.recv(65536):
                    answer += chunk
        head, _, payload = answer.partition(b"\r\n\r\n")
        check(head.startswith(b"HTTP/1.1 200"), f"/validate answered {head[:40]!r}")
        review = json.loads(payload)
        uid = json.loads(body)["request"]["uid"]
        check(review["response"]["uid"] == uid, "the answer must echo the request uid")
        if rotation:
            # The first rotation check read the rendered Secret, found it fresh and wrote nothing.
            deadline = time.monotonic() + 15
            checked = expiry = 0.0
            while time.monotonic() < deadline and not checked:
                with urllib.request.urlopen(f"http://127.0.0.1:{probe}/metrics", timeout=2) as r:
                    for line in r.read().decode().splitlines():
                        if line.startswith('portcullis_certificate_checks_total{result="fresh"} '):
                            checked = float(line.split()[1])
                        if line.startswith("portcullis_certificate_not_after_seconds "):
                            expiry = float(line.split()[1])
                time.sleep(0.1)
            check(checked == 1, f"the rotation check did not report the rendered certificate fresh: {checked}")
            check(expiry > time.time() + 300 * 86400, f"serving certificate expiry not published: {expiry}")
            check(not [line for line in api_log if not line.startswith("GET ")], f"a fresh certificate must not be rewritten: {api_log}")
            stop_api()
        print(f"serve: `portcullis {' '.join(argv[:1])} ...` with the Deployment's arguments; TLS to {host} verified with the rendered caBundle; allowed={review['response']['allowed']}"
              + (f"; rotation check read {len(api_log)} object(s) from a stand-in API server" if rotation else ""))
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(tmp, ignore_errors=True)


# --- deploy --------------------------------------------------------------------------------

NAMESPACE_DOC = """apiVersion: v1
kind: Namespace
metadata:
  name: portcullis
  labels:
    pod-security.kubernetes.io/enforce: restricted
"""


def cmd_deploy(args: argparse.Namespace) -> None:
    text = sys.stdin.read()
    if args.case == "config":
        docs = [d for d in yaml.safe_load_all(text) if d]
        config_map = next(d for d in find(docs, "ConfigMap") if d["metadata"]["name"].endswith("-config"))
        sys.stdout.write(config_map["data"]["config.yaml"])
        return
    documents = [d for d in re.split(r"^---\n", text, flags=re.M) if d.strip()]
    kept = []
    for document in documents:
        if args.case == "default" and re.search(r"^kind: Secret$", document, re.M):
            continue  # the generated key pair: never committed; deploy/make-certs makes one
        if args.case == "default":
            document = re.sub(r"^(\s+caBundle: ).*$", r"\1${CA_BUNDLE}", document, flags=re.M)
        kept.append(document.strip("\n") + "\n")
    sys.stdout.write("---\n" + NAMESPACE_DOC + "".join("---\n" + d for d in kept))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate")
    p.add_argument("version")
    p.add_argument("files", nargs="+")
    p = sub.add_parser("webhook")
    p.add_argument("file")
    p.add_argument("--namespace", default="portcullis")
    p.add_argument("--failure-policy", default="Fail")
    p.add_argument("--timeout", type=int, default=5)
    p.add_argument("--exclude", nargs="*", default=[])
    p.add_argument("--cert-mode", default="selfManaged")
    p.add_argument("--match-conditions", type=int, default=0)
    p.add_argument("--custom", nargs="*", default=[], metavar="GROUP/VERSION/RESOURCE",
                   help="custom workload rules expected (version * for every version)")
    p.add_argument("--pinning", action="store_true", help="expect the digest-pinning MutatingWebhookConfiguration")
    p.add_argument("--pinning-failure-policy", default="Ignore")
    p.add_argument("--pinning-timeout", type=int, default=5)
    p = sub.add_parser("rbac")
    p.add_argument("file")
    p.add_argument("--none", action="store_true")
    p.add_argument("--pull-secrets", action="store_true")
    p.add_argument("--trivy-operator", action="store_true")
    p.add_argument("--policy-reports", action="store_true")
    p.add_argument("--open-reports", action="store_true", help="expect openreports.io reports and clusterreports")
    p.add_argument("--rejudge", action="store_true", help="expect config.rejudge's reads (replicasets, jobs)")
    p.add_argument("--events", action="store_true", help="expect events.k8s.io events create, patch cluster-wide")
    p.add_argument("--rotation", metavar="FULLNAME", help="expect run-time certificate rotation grants and args")
    p = sub.add_parser("workload")
    p.add_argument("file")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--no-pdb", dest="pdb", action="store_false")
    p.add_argument("--no-network-policy", dest="network_policy", action="store_false")
    p = sub.add_parser("extract")
    p.add_argument("file")
    p.add_argument("dir")
    sub.add_parser("certs")
    p = sub.add_parser("serve")
    p.add_argument("file")
    p.add_argument("review")
    p = sub.add_parser("deploy")
    p.add_argument("case", choices=["default", "cert-manager", "config"])
    args = parser.parse_args()
    globals()[f"cmd_{args.command}"](args)
    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
