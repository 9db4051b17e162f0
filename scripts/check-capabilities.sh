#!/usr/bin/env bash
# Measures which capabilities the agent needs: runs the release agent as uid 0
# under exactly a given capability set (the bounding set, via capsh, as a
# container with `drop: [ALL]` + `add: [...]` gets), while
#   - a listener that predates the agent waits in a network namespace, and
#   - a podman container with the Kubernetes annotations of a kubelet connects
#     to it three times from that namespace and asks a DNS server there one
#     name,
# then reports what the agent saw. By default it runs the DaemonSet's set and
# that set with each capability removed in turn.
#
#   scripts/check-capabilities.sh                       # the table for the README
#   scripts/check-capabilities.sh cap_bpf,cap_perfmon   # one set
#   scripts/check-capabilities.sh --container [CAPS]    # in a podman container set up
#       like the DaemonSet: read-only root, no-new-privileges, the runtime's default
#       seccomp profile, its own network namespace, host paths mounted as there
#
# Needs root, podman, and a release build (cargo build --release -p sockeye-agent).
set -euo pipefail
cd "$(dirname "$0")/.."

DAEMONSET_CAPS=(cap_sys_admin cap_sys_ptrace cap_dac_read_search)
# The fine-grained BPF capabilities instead of CAP_SYS_ADMIN (kernel >= 5.8).
NO_SYS_ADMIN_CAPS=(cap_bpf cap_perfmon cap_net_admin cap_sys_ptrace cap_dac_read_search)
in_container=0
[[ ${1:-} == --container ]] && { in_container=1; shift; }
agent=target/release/sockeye-agent
netpeer=target/debug/netpeer
dnsresponder=target/debug/dnsresponder
[[ -x $agent ]] || { echo "build the agent first: cargo build --release -p sockeye-agent" >&2; exit 1; }
[[ -x $netpeer && -x $dnsresponder ]] || cargo build -q -p sockeye-tests --bin netpeer --bin dnsresponder

work=$(mktemp -d)
ns=capchk$$
listener_pid=
dns_pid=
cleanup() {
  [[ -n $listener_pid ]] && kill "$listener_pid" 2>/dev/null || true
  [[ -n $dns_pid ]] && kill "$dns_pid" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  ip netns del "$ns-agent" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A rootfs with busybox (static) and podman settings that work on this host.
mkdir -p "$work/root/bin"
cp /bin/busybox "$work/root/bin/"
cat > "$work/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF=$work/containers.conf

ip netns add "$ns"
ip -n "$ns" link set lo up
ip netns add "$ns-agent"

# The agent's own root filesystem for --container: the binary and its libraries,
# and the mount points the DaemonSet uses.
mkdir -p "$work/agent"/{bin,proc,sys,dev,etc,tmp,host/sys/fs/cgroup,host/proc,host/var/lib/containers/storage/overlay-containers}
cp "$agent" "$work/agent/bin/"
for lib in $(ldd "$agent" | grep -o '/[^ ]*'); do
  mkdir -p "$work/agent$(dirname "$lib")"
  cp "$lib" "$work/agent$lib"
done
cgroup2=$(awk '$9 == "cgroup2" {print $5; exit}' /proc/self/mountinfo)
ip netns exec "$ns" "$netpeer" listen 127.0.0.1:7001 close > "$work/listener.log" &
listener_pid=$!
ip netns exec "$ns" "$dnsresponder" 127.0.0.53:53 > "$work/dns.log" &
dns_pid=$!
for _ in $(seq 600); do grep -qs ready "$work/listener.log" && grep -qs ready "$work/dns.log" && break; sleep 0.1; done
grep -qs ready "$work/listener.log" && grep -qs ready "$work/dns.log" \
  || { echo "the test listener or DNS server did not get ready within 60 s" >&2; exit 1; }

all_caps() {
  local last; last=$(cat /proc/sys/kernel/cap_last_cap)
  capsh --decode="$(printf '%x' $(( (1 << (last + 1)) - 1 )))" | cut -d= -f2 | tr ',' ' '
}

# run_one CAPS: prints one Markdown table row.
run_one() {
  local want=" ${1//,/ } " drop=() out="$work/out.json" err="$work/err.log"
  for c in $(all_caps); do [[ $want == *" $c "* ]] || drop+=("$c"); done
  # Stopped with SIGINT once the client is done (plus two intervals), with a
  # 60 s ceiling, so a slow container start cannot cut the scenario short.
  local args=(-o json -i 1 --duration 60 --http-addr off --api-socket off)
  if (( in_container )); then
    local add; add=$(tr ' ' '\n' <<<"$want" | grep . | tr '[:lower:]' '[:upper:]' | paste -sd,)
    podman run --rm --network "ns:/run/netns/$ns-agent" --read-only --cap-drop=all ${add:+--cap-add="$add"} \
      --security-opt no-new-privileges ${SECCOMP:+--security-opt seccomp=$SECCOMP} \
      -v "$cgroup2":/host/sys/fs/cgroup:ro -v /sys/kernel/tracing:/sys/kernel/tracing:ro -v /proc:/host/proc:ro \
      -v /var/lib/containers/storage/overlay-containers:/host/var/lib/containers/storage/overlay-containers:ro \
      --rootfs "$work/agent" /bin/sockeye-agent "${args[@]}" --cgroup-root=/host/sys/fs/cgroup --proc=/host/proc \
      --containers-storage=/host/var/lib/containers/storage > "$out" 2> "$err" &
  else
    local drop_list; drop_list=$(IFS=,; echo "${drop[*]}")
    capsh --drop="$drop_list" -- -c "exec $agent ${args[*]}" > "$out" 2> "$err" &
  fi
  local pid=$! status=0 client_exit=-
  # A container start plus program loading: up to 60 s on a busy machine.
  for _ in $(seq 600); do grep -q '"type":"ready"' "$out" 2>/dev/null && break; kill -0 $pid 2>/dev/null || break; sleep 0.1; done
  if ! grep -q '"type":"ready"' "$out" && kill -0 $pid 2>/dev/null; then
    echo "  the agent did not say ready within 60 s" >&2
  fi
  if grep -q '"type":"ready"' "$out"; then
    local id
    id=$(podman run -d --network "ns:/run/netns/$ns" \
      --annotation io.kubernetes.pod.namespace=capchk --annotation io.kubernetes.pod.name=client-0 \
      --annotation io.kubernetes.container.name=client --rootfs "$work/root" \
      /bin/busybox sh -c 'for i in 1 2 3; do /bin/busybox nc 127.0.0.1 7001 </dev/null; done
                          /bin/busybox nslookup -type=a api.capchk.test 127.0.0.53 >/dev/null')
    client_exit=$(podman wait "$id")
    [[ $client_exit == 0 ]] || echo "  client container exited $client_exit: $(podman logs "$id" 2>&1 | tail -n 2)" >&2
    podman rm -f "$id" >/dev/null
    sleep 2.5
    kill -INT $pid 2>/dev/null || true
  fi
  wait $pid || status=$?
  [[ -n ${KEEP:-} ]] && { mkdir -p "$KEEP"; cp "$out" "$KEEP/${1//,/+}.json"; cp "$err" "$KEEP/${1//,/+}.err"; }
  python3 - "$1" "$status" "$out" "$err" "$client_exit" <<'PY'
import json, sys
caps, status, out, err, client = sys.argv[1:]
lines = [json.loads(l) for l in open(out) if l.startswith("{")]
errs = open(err).read()
ready = next((l for l in lines if l["type"] == "ready"), None)
flows = [l for l in lines if l["type"] == "flow"]
stats = [l for l in lines if l["type"] == "stats"]
def ok(b): return "yes" if b else "**no**"
named = any(f["direction"] == "outbound" and f["port"] == 7001 and f["connects_ok"] >= 3
            and (f["workload"].get("pod") or {}).get("container") == "client" for f in flows)
seen = any(f["port"] == 7001 and f["connects_ok"] >= 3 for f in flows)
served = any(f["direction"] == "inbound" and f["port"] == 7001 and f["connects_ok"] >= 3
             and f["last_comm"] == "netpeer" for f in flows)
import re
m = re.search(r"found (\d+) pre-existing TCP sockets in (\d+) network namespaces", errs)
pre = f"{m.group(1)} in {m.group(2)} netns" if m else "-"
for w in sorted({l.split("]", 1)[-1].strip() for l in errs.splitlines() if " WARN " in l or " ERROR " in l}):
    print(f"  {caps}: {w}", file=sys.stderr)
handles = "CAP_DAC_READ_SEARCH is missing" not in errs
dns = any(l["type"] == "dns" and l["name"] == "api.capchk.test" and l["answers"] >= 1
          and (l["workload"].get("pod") or {}).get("container") == "client" for l in lines)
if ready is None:
    first = next((l for l in errs.splitlines() if "error" in l.lower()), errs.strip()[-120:])
    print(f"| {caps} | **fails**: {first.strip()} | | | | | |")
else:
    feats = ",".join(f["name"] for f in ready["features"] if f["enabled"])
    if client != "0":
        print(f"| {caps} | yes ({feats}) | the client container failed (exit {client}): no verdict | | | {pre} | {ok(handles)} |")
    else:
        print(f"| {caps} | yes ({feats}) | {ok(seen)} / {ok(named)} | {ok(dns)} | {ok(served)} | {pre} | {ok(handles)} |")
PY
}

echo "| capabilities | loads (features) | sees the connects / named ns/pod/container | DNS query seen, named | pre-existing listener owns accepted connects | pre-existing sockets found | cgroup ids by handle |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
# leave_one_out SETNAME CAP...: the set, then the set less each of the caps
# named after "--" (all of them when there is no "--").
leave_one_out() {
  local name=$1; shift
  local set=() only=() seen_sep=0
  for a in "$@"; do
    if [[ $a == -- ]]; then seen_sep=1; elif (( seen_sep )); then only+=("$a"); else set+=("$a"); fi
  done
  (( ${#only[@]} )) || only=("${set[@]}")
  run_one "$(IFS=,; echo "${set[*]}")" | sed "s/^| [^|]* |/| $name |/"
  for c in "${only[@]}"; do
    local rest=(); for d in "${set[@]}"; do [[ $d == "$c" ]] || rest+=("$d"); done
    run_one "$(IFS=,; echo "${rest[*]}")" | sed "s/^| [^|]* |/| $name without $c |/"
  done
}

if (( $# )); then
  run_one "$1"
else
  leave_one_out "DaemonSet: $(IFS=,; echo "${DAEMONSET_CAPS[*]}")" "${DAEMONSET_CAPS[@]}"
  leave_one_out "$(IFS=,; echo "${NO_SYS_ADMIN_CAPS[*]}")" "${NO_SYS_ADMIN_CAPS[@]}" -- cap_bpf cap_perfmon cap_net_admin
fi
