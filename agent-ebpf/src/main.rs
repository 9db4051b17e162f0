//! Sockeye's kernel programs: the TCP lifecycle and why connects fail from
//! sock_ops, socket owners from cgroup connect/bind/release hooks; cgroup
//! names from a tracepoint, DNS from cgroup_skb, connects and socket()
//! calls that ran out of ports or fds from the syscall tracepoints.
#![no_std]
#![no_main]

mod cgroups;
mod dns;
mod emit;
mod maps;
mod owners;
mod resources;
mod sock_facts;
mod sock_ops;
mod tp_field;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach a real panic, so this
    // is never executed; it only satisfies no_std.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
