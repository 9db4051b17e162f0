//! Feeds arbitrary bytes to the DNS path as the kernel's ring buffer would:
//! as whole records (408 bytes, any field value, including lengths that lie
//! and unknown protocols), as short records, and as bare DNS messages. The
//! tracer is stateful across the records of one input, so TCP framing,
//! matching, retries, fan-out and timeouts all see hostile sequences.
//! Anything but a clean return (a panic, an overflow, a hang) is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockeye_agent::dns::{message, DnsConfig, DnsTracer};
use sockeye_common::dns::DnsPacket;

const RECORD: usize = std::mem::size_of::<DnsPacket>();

fuzz_target!(|data: &[u8]| {
    let _ = message::parse(data);
    let mut tracer = DnsTracer::new(DnsConfig {
        max_pending: 64,
        max_names: 16,
        max_tcp_streams: 8,
        ..DnsConfig::default()
    });
    for chunk in data.chunks(RECORD) {
        let mut record = [0u8; RECORD];
        record[..chunk.len()].copy_from_slice(chunk);
        tracer.handle_record(&record);
        tracer.handle_record(chunk);
    }
    tracer.tick(u64::MAX);
    tracer.end_window();
    let _ = tracer.health();
});
