//! The parts of a DNS message the agent needs: the header and the first
//! question. Parsed with hickory-proto, which bounds names (255 bytes,
//! 63-byte labels) and only follows compression pointers backwards, so a
//! hostile packet cannot loop. Anything malformed is an error for the
//! caller to count, never a panic.

use hickory_proto::{
    op::{Header, MessageType, Query},
    serialize::binary::{BinDecodable, BinDecoder},
};

/// The DNS header is 12 bytes.
const HEADER_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    pub response: bool,
    pub opcode: u8,
    /// The 4-bit RCODE of the header (extended RCODEs live in EDNS, which
    /// is past the bytes we copy).
    pub rcode: u16,
    pub truncated: bool,
    pub answers: u16,
    /// Lowercase, without the trailing dot ("." for the root).
    pub name: String,
    pub qtype: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("shorter than a DNS header ({0} bytes)")]
    Short(usize),
    #[error("bad DNS header: {0}")]
    Header(String),
    #[error("no question in the message")]
    NoQuestion,
    #[error("bad question: {0}")]
    Question(String),
}

impl ParseError {
    /// Stable snake_case reason, for counters.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::Short(_) => "short",
            ParseError::Header(_) => "header",
            ParseError::NoQuestion => "no_question",
            ParseError::Question(_) => "question",
        }
    }
}

pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    if bytes.len() < HEADER_LEN {
        return Err(ParseError::Short(bytes.len()));
    }
    let mut decoder = BinDecoder::new(bytes);
    let header = Header::read(&mut decoder).map_err(|e| ParseError::Header(e.to_string()))?;
    if header.counts.queries == 0 {
        return Err(ParseError::NoQuestion);
    }
    // Only the first question: every resolver in use sends exactly one, and
    // a hostile count must not make us read further.
    let query = Query::read(&mut decoder).map_err(|e| ParseError::Question(e.to_string()))?;
    let mut name = query.name().to_lowercase().to_ascii();
    if name.len() > 1 && name.ends_with('.') {
        name.pop();
    }
    Ok(Message {
        id: header.metadata.id,
        response: header.metadata.message_type == MessageType::Response,
        opcode: u8::from(header.metadata.op_code),
        rcode: u16::from(header.metadata.response_code),
        truncated: header.metadata.truncation,
        answers: header.counts.answers,
        name,
        qtype: u16::from(query.query_type()),
    })
}

/// RCODE names as dig prints them.
pub fn rcode_name(rcode: u16) -> &'static str {
    match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "OTHER",
    }
}

/// Record type names ("A", "AAAA", ...), or "TYPE<n>" for unknown ones.
pub fn qtype_name(qtype: u16) -> String {
    hickory_proto::rr::RecordType::from(qtype).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::testing::{answer, message as query_bytes};

    #[test]
    fn parses_a_query() {
        let m = parse(&query_bytes(0x1234, "Redis.Default.svc", 1)).unwrap();
        assert_eq!(m.id, 0x1234);
        assert!(!m.response);
        assert_eq!(m.name, "redis.default.svc");
        assert_eq!(m.qtype, 1);
        assert_eq!(qtype_name(m.qtype), "A");
    }

    #[test]
    fn parses_a_response_header() {
        let b = answer(query_bytes(7, "x.test", 28), 3, 2, true);
        let m = parse(&b).unwrap();
        assert!(m.response && m.truncated);
        assert_eq!((m.rcode, m.answers), (3, 2));
        assert_eq!(rcode_name(m.rcode), "NXDOMAIN");
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert_eq!(parse(&[0; 5]), Err(ParseError::Short(5)));
        let mut no_q = query_bytes(1, "a", 1);
        no_q[5] = 0;
        assert_eq!(parse(&no_q), Err(ParseError::NoQuestion));
        // A compression pointer to itself.
        let mut looped = query_bytes(1, "a", 1)[..12].to_vec();
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(matches!(parse(&looped), Err(ParseError::Question(_))));
        // A label longer than 63 bytes.
        let mut long = query_bytes(1, "a", 1)[..12].to_vec();
        long.push(64);
        long.extend_from_slice(&[b'a'; 64]);
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(matches!(parse(&long), Err(ParseError::Question(_))));
        // Truncated in the middle of the name.
        let full = query_bytes(1, "abcdef.example", 1);
        assert!(matches!(parse(&full[..16]), Err(ParseError::Question(_))));
        // A hostile question count only makes us read the first.
        let mut many = query_bytes(1, "a", 1);
        many[4] = 0xff;
        many[5] = 0xff;
        assert_eq!(parse(&many).unwrap().name, "a");
    }

    #[test]
    fn names_longer_than_255_bytes_are_errors() {
        let labels: Vec<String> = (0..5).map(|_| "b".repeat(63)).collect();
        let b = query_bytes(1, &labels.join("."), 1);
        assert!(matches!(parse(&b), Err(ParseError::Question(_))));
    }
}
