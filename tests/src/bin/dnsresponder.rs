//! A DNS server for tests whose behaviour is chosen by the first label of
//! the name asked, so a test can inject exactly what it needs:
//!
//!   delay<N>.*   answer NOERROR (A 10.0.0.1) after N milliseconds
//!   servfail.*   SERVFAIL          refused.*   REFUSED
//!   nxdomain.*   NXDOMAIN          silent.*    never answer
//!   trunc.*      over UDP: truncated (TC) with no records; over TCP: the answer
//!   garbage.*    a malformed answer (its question is a compression loop)
//!   anything else: NOERROR, A 10.0.0.1
//!
//!   dnsresponder ADDR        serves UDP and TCP on ADDR (e.g. 10.77.0.3:53)
//!
//! Prints "ready" once both sockets are bound. Each query is handled on its
//! own thread so that delays do not hold up other queries.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::Arc,
    time::Duration,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr] = args.as_slice() else {
        eprintln!("usage: dnsresponder ADDR");
        std::process::exit(2);
    };
    let udp = Arc::new(UdpSocket::bind(addr).unwrap_or_else(|e| fail(&format!("udp {addr}: {e}"))));
    let tcp = TcpListener::bind(addr).unwrap_or_else(|e| fail(&format!("tcp {addr}: {e}")));
    println!("ready");
    std::thread::spawn(move || {
        for conn in tcp.incoming().flatten() {
            std::thread::spawn(move || serve_tcp(conn));
        }
    });
    let mut buf = [0u8; 4096];
    loop {
        let Ok((n, peer)) = udp.recv_from(&mut buf) else {
            continue;
        };
        let query = buf[..n].to_vec();
        let udp = udp.clone();
        std::thread::spawn(move || {
            if let Some(answer) = respond(&query, false) {
                let _ = udp.send_to(&answer, peer);
            }
        });
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("dnsresponder: {msg}");
    std::process::exit(1)
}

fn serve_tcp(mut conn: TcpStream) {
    loop {
        let mut len = [0u8; 2];
        if conn.read_exact(&mut len).is_err() {
            return;
        }
        let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
        if conn.read_exact(&mut query).is_err() {
            return;
        }
        if let Some(answer) = respond(&query, true) {
            let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&answer);
            if conn.write_all(&framed).is_err() {
                return;
            }
        }
    }
}

/// The answer to `query`, or None to stay silent.
fn respond(query: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let (first_label, question_end) = question(query)?;
    let label = first_label.to_ascii_lowercase();
    let mut rcode = 0u8;
    let mut truncated = false;
    let mut records = 1u16;
    match label.as_str() {
        "silent" => return None,
        "servfail" => rcode = 2,
        "nxdomain" => rcode = 3,
        "refused" => rcode = 5,
        "trunc" if !tcp => truncated = true,
        "garbage" => {
            let mut bad = query[..12].to_vec();
            bad[2] |= 0x80;
            bad.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            return Some(bad);
        }
        l => {
            if let Some(ms) = l.strip_prefix("delay").and_then(|n| n.parse().ok()) {
                std::thread::sleep(Duration::from_millis(ms));
            }
        }
    }
    if rcode != 0 || truncated {
        records = 0;
    }
    let mut a = query[..question_end].to_vec();
    a[2] = 0x80 | (query[2] & 0x01) | if truncated { 0x02 } else { 0 }; // QR, RD, TC
    a[3] = 0x80 | rcode; // RA
    a[4..6].copy_from_slice(&1u16.to_be_bytes());
    a[6..8].copy_from_slice(&records.to_be_bytes());
    a[8..12].fill(0);
    if records == 1 {
        // A 10.0.0.1, TTL 60, name compressed to the question's.
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1]);
    }
    Some(a)
}

/// The first label of the question and where the question ends.
fn question(q: &[u8]) -> Option<(String, usize)> {
    let mut i = 12;
    let mut first = None;
    loop {
        let len = *q.get(i)? as usize;
        if len == 0 {
            i += 1;
            break;
        }
        if len > 63 {
            return None;
        }
        let label = q.get(i + 1..i + 1 + len)?;
        first.get_or_insert_with(|| String::from_utf8_lossy(label).into_owned());
        i += 1 + len;
    }
    let end = i + 4;
    (end <= q.len()).then(|| (first.unwrap_or_default(), end))
}
