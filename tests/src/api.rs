//! The real agent with its API: the same loop the binary runs, in a
//! background thread, serving on a private unix socket (and TCP when asked).

use std::{path::PathBuf, sync::mpsc, thread::JoinHandle, time::Duration};

use sockeye_agent::{
    api::{self, server::ServeOptions, Listening},
    attribution::filter::WorkloadFilter,
    output::OutputFormat,
    push::PushConfig,
    run::{run, RunOptions},
    Config,
};
use sockeye_proto::{
    connect::{connect, ClientTls},
    v1::agent_service_client::AgentServiceClient,
};
use tokio::sync::oneshot;
use tonic::transport::Channel;

use crate::agent::start_with;

/// Stopped (programs detached, socket removed) on drop.
pub struct ApiAgent {
    pub listening: Listening,
    dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ApiAgent {
    /// Starts the agent with `config`, its API on a fresh unix socket plus
    /// whatever `serve` adds (TCP, TLS).
    pub fn start(config: Config, serve: ServeOptions) -> Self {
        Self::start_pushing(config, serve, None)
    }

    /// As [`ApiAgent::start`], also pushing windows to a collector.
    pub fn start_pushing(
        config: Config,
        mut serve: ServeOptions,
        push: Option<PushConfig>,
    ) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sockeye-api-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        serve.unix = Some(dir.join("agent.sock"));
        let (stop, stop_rx) = oneshot::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let mut agent = start_with(&config);
            if let Some(push) = push {
                let _entered = runtime.enter();
                agent.start_pushing(push);
            }
            let (requests, listening) = runtime
                .block_on(api::start(&agent, &serve))
                .expect("API starts");
            ready_tx.send(listening).expect("test waits");
            let opts = RunOptions {
                output: OutputFormat::None,
                interval: Duration::from_secs(1),
                filter: WorkloadFilter::default(),
                duration: None,
                top: 0,
                health: None,
                api: Some(requests),
                stop: Some(stop_rx),
                metrics: None,
            };
            runtime.block_on(run(agent, opts)).expect("agent loop");
        });
        let listening = ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("agent with API started");
        Self {
            listening,
            dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// "unix:///..." of the API socket.
    pub fn target(&self) -> String {
        format!(
            "unix://{}",
            self.listening.unix.as_ref().expect("unix socket").display()
        )
    }

    pub async fn channel(&self) -> Channel {
        connect(&self.target(), None)
            .await
            .expect("connect to the agent API")
    }

    pub async fn client(&self) -> AgentServiceClient<Channel> {
        AgentServiceClient::new(self.channel().await)
    }

    /// A TCP target (`https://` when TLS is on).
    pub async fn tcp_channel(&self, tls: Option<&ClientTls>) -> Result<Channel, String> {
        let addr = self.listening.tcp.expect("TCP API");
        let scheme = if tls.is_some() { "https" } else { "http" };
        connect(&format!("{scheme}://{addr}"), tls)
            .await
            .map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))
    }
}

impl Drop for ApiAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A single-threaded runtime for a test's client side.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}
