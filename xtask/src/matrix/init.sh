#!/bin/busybox sh
# /init of a kernel-matrix guest (built into the initramfs by
# xtask/src/matrix/initramfs.rs). It mounts what the agent needs, brings up
# loopback, runs one matrix row (`xtask smoke`: verify every program, then
# the smoke test) and powers off. Its stdout is the serial console; the host
# judges the row by the SOCKEYE-MATRIX lines, never by QEMU's exit status.
/bin/busybox --install -s /bin
export PATH=/bin

# A failed mount is reported here and again by the agent, in its own words.
mount -t proc proc /proc || echo "init: mounting /proc failed"
mount -t sysfs sysfs /sys || echo "init: mounting /sys failed"
mount -t devtmpfs devtmpfs /dev || echo "init: mounting /dev failed"
mount -t tmpfs tmpfs /tmp || echo "init: mounting /tmp failed"
mount -t cgroup2 cgroup2 /sys/fs/cgroup || echo "init: mounting cgroup2 failed"
mount -t tracefs tracefs /sys/kernel/tracing || echo "init: mounting tracefs failed"
mount -t bpf bpf /sys/fs/bpf || echo "init: mounting bpffs failed"
ip link set lo up || echo "init: bringing up lo failed"

/bin/xtask smoke --agent /bin/sockeye-agent
echo "init: xtask smoke exited with status $?"
poweroff -f
