//! The few pieces of ClickHouse's RowBinary format the store uses (it has
//! been in ClickHouse since long before 18.16): little-endian integers,
//! `Date` as days since 1970 (UInt16), `String` as a LEB128 length and the
//! bytes. Windows travel as their protobuf encoding in a `String` column,
//! so no text escaping touches them.

use super::http::ClickHouseError;

pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len());
    out.extend_from_slice(b);
}

/// The LEB128 length that starts a `String` or an `Array`.
pub fn put_len(out: &mut Vec<u8>, n: usize) {
    let mut n = n as u64;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
}

/// Reads rows of an answer in order; every read fails cleanly on a short
/// or malformed answer.
pub struct Reader<'a> {
    buf: &'a [u8],
}

fn short(what: &str) -> ClickHouseError {
    ClickHouseError::Decode {
        what: format!("RowBinary answer ends inside {what}"),
    }
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ClickHouseError> {
        if self.buf.len() < n {
            return Err(short(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub fn i64(&mut self) -> Result<i64, ClickHouseError> {
        let b = self.take(8, "an Int64")?;
        Ok(i64::from_le_bytes(
            b.try_into().map_err(|_| short("an Int64"))?,
        ))
    }

    pub fn u16(&mut self) -> Result<u16, ClickHouseError> {
        let b = self.take(2, "a UInt16")?;
        Ok(u16::from_le_bytes(
            b.try_into().map_err(|_| short("a UInt16"))?,
        ))
    }

    pub fn u64(&mut self) -> Result<u64, ClickHouseError> {
        let b = self.take(8, "a UInt64")?;
        Ok(u64::from_le_bytes(
            b.try_into().map_err(|_| short("a UInt64"))?,
        ))
    }

    pub fn u32(&mut self) -> Result<u32, ClickHouseError> {
        let b = self.take(4, "a UInt32")?;
        Ok(u32::from_le_bytes(
            b.try_into().map_err(|_| short("a UInt32"))?,
        ))
    }

    pub fn u8(&mut self) -> Result<u8, ClickHouseError> {
        Ok(self.take(1, "a UInt8")?[0])
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], ClickHouseError> {
        let n = self.length()?;
        self.take(n, "a String")
    }

    /// The LEB128 length of a `String` or an `Array`.
    pub fn length(&mut self) -> Result<usize, ClickHouseError> {
        let mut n: u64 = 0;
        let mut shift = 0;
        loop {
            let b = self.take(1, "a String length")?[0];
            if shift >= 64 {
                return Err(ClickHouseError::Decode {
                    what: "a String length longer than 64 bits".into(),
                });
            }
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        usize::try_from(n).map_err(|_| short("a String"))
    }

    pub fn string(&mut self) -> Result<String, ClickHouseError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|e| ClickHouseError::Decode {
            what: format!("a String that is not UTF-8: {e}"),
        })
    }
}

/// Days since 1970-01-01 of the UTC day holding `unix_ms`, as ClickHouse's
/// `Date` (UInt16) holds them: clamped to what it can hold.
pub fn day_of(unix_ms: i64) -> u16 {
    unix_ms.div_euclid(86_400_000).clamp(0, i64::from(u16::MAX)) as u16
}

/// `YYYYMMDD` of a day since 1970: the partition id ClickHouse gives a
/// table partitioned by a `Date` column.
pub fn yyyymmdd(day: u16) -> u32 {
    // Howard Hinnant's civil_from_days.
    let z = i64::from(day) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y * 10_000 + m * 100 + d) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_integers_round_trip() {
        let mut out = Vec::new();
        put_i64(&mut out, -5);
        put_bytes(&mut out, &[7u8; 300]);
        put_u64(&mut out, u64::MAX);
        let mut r = Reader::new(&out);
        assert_eq!(r.i64().unwrap(), -5);
        assert_eq!(r.bytes().unwrap(), &[7u8; 300][..]);
        assert_eq!(r.u64().unwrap(), u64::MAX);
        assert!(r.is_empty());
        assert!(Reader::new(&out[..20]).i64().is_ok());
        let mut r = Reader::new(&out[..20]);
        r.i64().unwrap();
        assert!(
            r.bytes().is_err(),
            "a short answer is an error, not a panic"
        );
    }

    #[test]
    fn days_and_partition_ids() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(-1), 0);
        assert_eq!(yyyymmdd(0), 19700101);
        // 2026-12-02 00:00:00 UTC = 1796169600 s.
        assert_eq!(yyyymmdd(day_of(1_796_169_600_000)), 20261202);
        assert_eq!(yyyymmdd(day_of(1_796_169_600_000 - 1)), 20261201);
        assert_eq!(yyyymmdd(day_of(951_782_400_000)), 20000229);
    }
}
