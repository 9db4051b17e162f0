//! A container that names its process with terminal control sequences
//! (the kernel takes the name from the file it ran, here a link named
//! `ESC[31mevil...`): the real agent records it as it is, and neither the
//! CLI's table nor its JSON lets the sequence reach a terminal.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    time::{Duration, Instant},
};

use sockeye_agent::{api::server::ServeOptions, Config};
use sockeye_cli::{run, Cli};
use sockeye_tests::{
    api::{runtime, ApiAgent},
    net::TestNet,
    peer, require_root,
};

const HOSTILE: &str = "\x1b[31mevil\x1b[0m";

fn sockeye(args: &[&str]) -> String {
    let mut argv = vec!["sockeye"];
    argv.extend_from_slice(args);
    let cli = Cli::from_args(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let mut out = Vec::new();
    runtime()
        .block_on(run(cli, &mut out))
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    String::from_utf8(out).expect("UTF-8")
}

#[test]
fn a_process_named_with_escape_sequences_cannot_drive_the_terminal() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("hostile", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let addr = format!("{}:8080", server.ip4);
    let _srv = peer::listen(server, &addr, "hold");
    let agent = ApiAgent::start(Config::default(), ServeOptions::default());

    let dir = std::env::temp_dir().join(format!("sockeye-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join(HOSTILE);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(peer::netpeer_path(), &link).unwrap();
    let mut evil = peer::command_in(client, &link, true)
        .args(["connect", &addr, "2", "hold", "2000"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the hostile process");
    let mut lines = BufReader::new(evil.stdout.take().unwrap()).lines();
    let results: Vec<String> = lines
        .by_ref()
        .map_while(Result::ok)
        .take_while(|l| l != "done")
        .collect();
    assert!(results.iter().all(|r| r.starts_with("ok")), "{results:?}");
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", evil.id())).unwrap();
    assert_eq!(
        comm.trim_end_matches('\n'),
        HOSTILE,
        "the kernel took the link's name"
    );

    let cgroup = client.cgroup_dir.display().to_string();
    let cgroup = cgroup.trim_start_matches("/sys/fs/cgroup/unified");
    let target = agent.target();
    let deadline = Instant::now() + Duration::from_secs(15);
    let table = loop {
        let t = sockeye(&["--agent", &target, "conns", "-o", "wide", "-c", cgroup]);
        if t.contains("evil") {
            break t;
        }
        assert!(Instant::now() < deadline, "the process never showed: {t}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        !table.contains('\x1b'),
        "a raw ESC reached the table: {table:?}"
    );
    assert!(table.contains("\\x1b[31mevil\\x1b[0m("), "{table}");
    // JSON: the same name to a parser, no control character on the wire.
    let json = sockeye(&["--agent", &target, "conns", "-o", "json", "-c", cgroup]);
    assert!(
        !json
            .chars()
            .any(|c| c != '\n' && sockeye_proto::text::is_unsafe(c)),
        "{json:?}"
    );
    let named = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .any(|v| {
            v.to_string().contains("evil")
                && serde_json::to_string(&v)
                    .unwrap()
                    .contains("\\u001b[31mevil")
        });
    assert!(named, "{json}");
    let _ = evil.kill();
    let _ = evil.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
