//! The log format of both binaries (the collector's and the agent's, which
//! embeds a collector): `env_logger` at `info` unless `RUST_LOG` says
//! otherwise, every message escaped.
//!
//! Log lines carry text from the kernel and from peers (process names, DNS
//! names, pod and node names, tokens' user names, errors quoting requests):
//! escaped, so no terminal that shows the log (`kubectl logs`) acts on a
//! control sequence a container or a caller chose.

use std::io::Write as _;

pub fn init() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            let ts = buf.timestamp();
            let msg = record.args().to_string();
            writeln!(
                buf,
                "[{ts} {} {}] {}",
                record.level(),
                record.target(),
                sockeye_proto::text::escape(&msg)
            )
        })
        .init();
}
