//! The TCP listener's door: a connection past the limits (in all, or from
//! one address) is closed at once and counted; TLS handshakes run side by
//! side, each with a timeout, so a client that stalls holds only itself;
//! and every connection carries where it came from ([`PeerInfo`]) into
//! each request it makes.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

use crate::{
    stats::Counters,
    tls::{reload::LiveTls, HANDSHAKE_TIMEOUT},
};

/// TCP keepalive finds peers that vanished without closing.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Connections past their handshake, waiting for the server to take them.
const READY_QUEUE: usize = 64;

/// Where a request's connection came from (a request extension).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: SocketAddr,
    pub tls: bool,
}

/// How many connections the listener keeps open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub max_total: usize,
    /// From one IP address: an agent needs one, a CLI or a dashboard a few.
    /// A NAT in front of many clients needs more.
    pub max_per_ip: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_total: 4096,
            max_per_ip: 32,
        }
    }
}

/// Counts open connections; a [`ConnPermit`] is one of them.
#[derive(Debug)]
pub(crate) struct Limiter {
    limits: ConnLimits,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Why a connection was not let in.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Full {
    Total(usize),
    Ip(usize),
}

impl Limiter {
    pub fn new(limits: ConnLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, HashMap<IpAddr, usize>)> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnPermit, Full> {
        let mut open = self.lock();
        if open.0 >= self.limits.max_total {
            return Err(Full::Total(self.limits.max_total));
        }
        let n = open.1.entry(ip).or_insert(0);
        if *n >= self.limits.max_per_ip {
            return Err(Full::Ip(self.limits.max_per_ip));
        }
        *n += 1;
        open.0 += 1;
        Ok(ConnPermit {
            limiter: self.clone(),
            ip,
        })
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().0
    }
}

/// One open connection; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct ConnPermit {
    limiter: Arc<Limiter>,
    ip: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut open = self.limiter.lock();
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An accepted connection, with its TLS session if any.
pub(crate) struct PeerStream {
    io: Io,
    info: PeerInfo,
    _permit: ConnPermit,
}

impl Connected for PeerStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Accepts until shutdown, handing connections that passed the limits (and
/// their TLS handshake) to the server.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: Option<Arc<LiveTls>>,
    limiter: Arc<Limiter>,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<PeerStream, io::Error>> {
    let (tx, rx) = mpsc::channel(READY_QUEUE);
    tokio::spawn(async move {
        let mut warned_full = false;
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most likely: wait instead of
                    // spinning; the connections already open go on.
                    log::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let permit = match limiter.try_acquire(remote.ip()) {
                Ok(p) => {
                    warned_full = false;
                    p
                }
                Err(full) => {
                    Counters::add(&counters.connections_refused, 1);
                    if !warned_full {
                        let why = match full {
                            Full::Total(n) => {
                                format!("{n} connections are open (--max-connections)")
                            }
                            Full::Ip(n) => format!(
                                "{n} connections from {} are open (--max-connections-per-ip)",
                                remote.ip()
                            ),
                        };
                        log::warn!("refusing connections: {why}");
                        warned_full = true;
                    }
                    drop(tcp);
                    continue;
                }
            };
            let sock = socket2::SockRef::from(&tcp);
            let _ = sock.set_tcp_nodelay(true);
            let _ = sock.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE));
            let info = PeerInfo {
                remote,
                tls: tls.is_some(),
            };
            let Some(tls) = &tls else {
                let stream = PeerStream {
                    io: Io::Plain(tcp),
                    info,
                    _permit: permit,
                };
                if tx.send(Ok(stream)).await.is_err() {
                    return;
                }
                continue;
            };
            let acceptor = tls.acceptor();
            let (tx, counters) = (tx.clone(), counters.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => {
                        let stream = PeerStream {
                            io: Io::Tls(Box::new(s)),
                            info,
                            _permit: permit,
                        };
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        Counters::add(&counters.tls_handshake_failures, 1);
                        log::debug!("TLS handshake with {remote} failed: {e}");
                    }
                    Err(_) => {
                        Counters::add(&counters.tls_handshake_failures, 1);
                        log::debug!("TLS handshake with {remote} timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_limited_in_all_and_per_address_and_freed_on_drop() {
        let l = Limiter::new(ConnLimits {
            max_total: 3,
            max_per_ip: 2,
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = l.try_acquire(a).unwrap();
        let _a2 = l.try_acquire(a).unwrap();
        assert_eq!(l.try_acquire(a).unwrap_err(), Full::Ip(2));
        let _b1 = l.try_acquire(b).unwrap();
        assert_eq!(l.try_acquire(b).unwrap_err(), Full::Total(3));
        drop(a1);
        assert_eq!(l.open(), 2);
        let _a3 = l.try_acquire(a).unwrap();
    }
}
