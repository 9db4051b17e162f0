//! The standing load the detectors work on: many connections held open
//! across many flows, and one destination whose connections keep growing
//! (a leak), so that a finding is open while a round is measured.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

/// Connections held open, both ends in this process: `conns` spread evenly
/// over `ports` listeners on 127.0.0.1, so one outbound and one inbound
/// flow per port. Dropping it closes everything.
pub struct Held {
    _listeners: Vec<TcpListener>,
    _conns: Vec<(TcpStream, TcpStream)>,
}

impl Held {
    pub fn open(ports: usize, conns: usize) -> Result<Held> {
        let listeners = (0..ports)
            .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .collect::<std::io::Result<Vec<_>>>()
            .context("binding the held connections' listeners")?;
        let mut held = Vec::with_capacity(conns);
        for i in 0..conns {
            let listener = &listeners[i % ports];
            held.push(
                connect_accept(listener)
                    .with_context(|| format!("opening held connection {} of {conns}", i + 1))?,
            );
        }
        Ok(Held {
            _listeners: listeners,
            _conns: held,
        })
    }
}

/// One connection to `listener`, accepted: (client end, server end).
fn connect_accept(listener: &TcpListener) -> Result<(TcpStream, TcpStream)> {
    let client = TcpStream::connect(listener.local_addr()?)?;
    // Nothing else connects to our listeners, so this is that connection.
    let (server, _) = listener.accept()?;
    Ok((client, server))
}

/// A destination whose open connections grow by one every `every` until
/// stopped: what the leak detector looks for.
pub struct Leak {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<usize>>>,
    port: u16,
}

impl Leak {
    pub fn start(every: Duration) -> Result<Leak> {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the leak's listener")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("bench-leak".into())
            .spawn(move || {
                let mut conns = Vec::new();
                let mut next = Instant::now();
                while !flag.load(Ordering::Relaxed) {
                    if Instant::now() >= next {
                        conns.push(connect_accept(&listener)?);
                        next += every;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                Ok(conns.len())
            })
            .context("spawning the leak thread")?;
        Ok(Leak {
            stop,
            thread: Some(thread),
            port,
        })
    }

    /// The leaking destination's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops growing, closes every connection, and says how many there were.
    pub fn stop(mut self) -> Result<usize> {
        self.join()
    }

    fn join(&mut self) -> Result<usize> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow!("the leak thread panicked"))?
                .context("the leak thread"),
            None => Ok(0),
        }
    }
}

impl Drop for Leak {
    fn drop(&mut self) {
        let _ = self.join();
    }
}
