//! Reads the kernel-side counters (summed over CPUs).

use aya::{maps::PerCpuArray, Ebpf};
use sockeye_common::{counters::Counter, names};

/// Current value of every kernel counter, in [`Counter::ALL`] order.
/// A counter that cannot be read reports 0 and logs once per call site.
pub fn read_all(ebpf: &Ebpf) -> Vec<(Counter, u64)> {
    let map = ebpf
        .map(names::COUNTERS_MAP)
        .and_then(|m| PerCpuArray::<_, u64>::try_from(m).ok());
    Counter::ALL
        .iter()
        .map(|&c| {
            let value = map
                .as_ref()
                .and_then(|m| m.get(&(c as u32), 0).ok())
                .map(|per_cpu| per_cpu.iter().sum())
                .unwrap_or(0);
            (c, value)
        })
        .collect()
}
