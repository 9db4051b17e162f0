//! Real DNS traffic for the smoke test: a tiny UDP DNS server on a loopback
//! address and a client that asks it. Names starting with `nx.` get
//! NXDOMAIN, others NOERROR with one A record. The agent watches port 53,
//! its default.

use std::net::{SocketAddr, UdpSocket};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// A loopback address of its own, so a resolver already listening on
/// 127.0.0.1:53 or 127.0.0.53:53 on the host does not get in the way, and
/// of this process (127.77.x.y from its pid), so two smoke runs at once
/// (two checkouts' test suites) do not either. The port is the agent's
/// default DNS port.
pub fn server() -> SocketAddr {
    let pid = std::process::id();
    SocketAddr::from(([127, 77, (pid >> 8) as u8, pid as u8], 53))
}
const TIMEOUT: Duration = Duration::from_secs(10);
const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
const NOERROR: u8 = 0;
const NXDOMAIN: u8 = 3;

/// Answers `count` queries, then stops.
pub struct Server {
    thread: JoinHandle<Result<()>>,
}

impl Server {
    pub fn start(count: usize) -> Result<Self> {
        let socket = UdpSocket::bind(server())
            .with_context(|| format!("binding DNS server {}", server()))?;
        socket.set_read_timeout(Some(TIMEOUT))?;
        let thread = thread::Builder::new()
            .name("smoke-dns".into())
            .spawn(move || {
                let mut buf = [0u8; 512];
                for _ in 0..count {
                    let (n, peer) = socket.recv_from(&mut buf).context("DNS server recv")?;
                    let answer = answer(&buf[..n])?;
                    socket.send_to(&answer, peer).context("DNS server send")?;
                }
                Ok(())
            })
            .context("spawning the DNS server")?;
        Ok(Self { thread })
    }

    /// Waits until every query was answered.
    pub fn finish(self) -> Result<()> {
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the DNS server thread panicked"))?
    }
}

/// Asks `name` (type A) `times` times, each with its own id, and checks each
/// answer's id and rcode.
pub fn ask(name: &str, times: u16) -> Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0").context("binding the DNS client")?;
    socket.set_read_timeout(Some(TIMEOUT))?;
    let server = server();
    let want = if name.starts_with("nx.") {
        NXDOMAIN
    } else {
        NOERROR
    };
    for id in 1..=times {
        socket
            .send_to(&query(id, name), server)
            .context("sending a DNS query")?;
        let mut buf = [0u8; 512];
        let n = socket
            .recv(&mut buf)
            .context("waiting for the DNS answer")?;
        let answer = &buf[..n];
        if answer.len() < 12 || u16::from_be_bytes([answer[0], answer[1]]) != id {
            bail!("bad DNS answer for {name}: {answer:02x?}");
        }
        if answer[3] & 0x0f != want {
            bail!(
                "DNS answer for {name} has rcode {}, want {want}",
                answer[3] & 0x0f
            );
        }
    }
    Ok(())
}

pub(crate) fn query(id: u16, name: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(64);
    message.extend_from_slice(&id.to_be_bytes());
    // Flags: a standard query, recursion desired. One question.
    message.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        message.push(label.len() as u8);
        message.extend_from_slice(label.as_bytes());
    }
    message.push(0);
    message.extend_from_slice(&TYPE_A.to_be_bytes());
    message.extend_from_slice(&CLASS_IN.to_be_bytes());
    message
}

/// The query turned into its answer: same id and question, the response
/// bit, an rcode, and for NOERROR one A record (10.0.0.1) pointing back at
/// the question's name.
fn answer(query: &[u8]) -> Result<Vec<u8>> {
    if query.len() < 12 {
        bail!("DNS query too short: {query:02x?}");
    }
    let name_len = query[12..]
        .iter()
        .position(|&b| b == 0)
        .context("DNS query without a name end")?;
    let question_end = 12 + name_len + 1 + 4;
    let question = query.get(12..question_end).context("DNS query cut short")?;
    let nx = question.get(1..3) == Some(b"nx");
    let mut message = query[..2].to_vec();
    let rcode = if nx { NXDOMAIN } else { NOERROR };
    // QR (response), RD copied, RA; one question, one answer unless NX.
    message.extend_from_slice(&[0x81, 0x80 | rcode, 0, 1, 0, u8::from(!nx), 0, 0, 0, 0]);
    message.extend_from_slice(question);
    if !nx {
        // Name: pointer to offset 12; type A, class IN, TTL 60, 4 bytes.
        message.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1]);
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_match_their_query() {
        let q = query(7, "ok.smoke.test");
        assert_eq!(&q[..2], &[0, 7]);
        assert_eq!(&q[12..16], b"\x02ok\x05");
        let a = answer(&q).unwrap();
        assert_eq!(
            (&a[..2], a[2] & 0x80, a[3] & 0x0f, a[7]),
            (&[0u8, 7][..], 0x80, 0, 1)
        );
        assert_eq!(&a[12..q.len()], &q[12..]);
        let nx = answer(&query(8, "nx.smoke.test")).unwrap();
        assert_eq!((nx[3] & 0x0f, nx[7]), (NXDOMAIN, 0));
        assert!(answer(&[0; 5]).is_err());
    }
}
