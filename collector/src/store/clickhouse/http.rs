//! ClickHouse's HTTP interface: one POST per statement, errors as text.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{header, Request, StatusCode};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

/// Longest one statement may take before it counts as failed: a server
/// that accepts connections but never answers must not hold acks forever.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum ClickHouseError {
    #[error("cannot reach ClickHouse at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("ClickHouse at {url} did not answer within {} s", STATEMENT_TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error("reading ClickHouse's answer from {url} failed: {source}")]
    Body {
        url: String,
        #[source]
        source: hyper::Error,
    },
    #[error("ClickHouse refused the statement (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    #[error("ClickHouse's answer is not what was asked for: {what}")]
    Decode { what: String },
}

impl ClickHouseError {
    /// The server could not be asked at all (as opposed to answering no).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. } | Self::Timeout { .. } | Self::Body { .. }
        )
    }
}

/// Where the server is and who the collector is to it.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    /// `http://host:port/`
    base: String,
    /// `Basic ...` when the URL named a user.
    auth: Option<String>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        f.debug_struct("Http").field("base", &self.base).finish()
    }
}

impl Http {
    pub fn new(host_port: &str, user: Option<(&str, &str)>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: format!("http://{host_port}/"),
            auth: user.map(|(u, p)| format!("Basic {}", base64(format!("{u}:{p}").as_bytes()))),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Runs `sql`; `data` (for INSERT ... FORMAT RowBinary) is the body, the
    /// statement then goes in the URL. Returns the answer's bytes.
    pub async fn run(&self, sql: &str, data: Option<Vec<u8>>) -> Result<Bytes, ClickHouseError> {
        let (uri, body) = match data {
            Some(data) => {
                let q: String = form_urlencoded::byte_serialize(sql.as_bytes()).collect();
                (format!("{}?query={q}", self.base), data)
            }
            None => (self.base.clone(), sql.as_bytes().to_vec()),
        };
        let mut req = Request::post(uri).header(header::CONTENT_TYPE, "application/octet-stream");
        if let Some(a) = &self.auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClickHouseError::Decode {
                what: format!("request could not be built: {e}"),
            })?;
        let url = self.base.clone();
        let answer =
            async {
                let resp = self.client.request(req).await.map_err(|source| {
                    ClickHouseError::Unreachable {
                        url: url.clone(),
                        source,
                    }
                })?;
                let status = resp.status();
                let bytes = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|source| ClickHouseError::Body {
                        url: url.clone(),
                        source,
                    })?
                    .to_bytes();
                Ok::<_, ClickHouseError>((status, bytes))
            };
        let (status, bytes) = tokio::time::timeout(STATEMENT_TIMEOUT, answer)
            .await
            .map_err(|_| ClickHouseError::Timeout { url: url.clone() })??;
        if status != StatusCode::OK {
            let text = String::from_utf8_lossy(&bytes);
            return Err(ClickHouseError::Refused {
                status: status.as_u16(),
                message: text.trim().chars().take(2000).collect(),
            });
        }
        Ok(bytes)
    }

    /// Runs `sql` and reads the answer as tab-separated text lines.
    pub async fn lines(&self, sql: &str) -> Result<Vec<String>, ClickHouseError> {
        let bytes = self.run(sql, None).await?;
        let text = std::str::from_utf8(&bytes).map_err(|e| ClickHouseError::Decode {
            what: format!("not UTF-8 text: {e}"),
        })?;
        Ok(text.lines().map(str::to_string).collect())
    }

    /// Runs `sql`, which answers one number.
    pub async fn number<T: std::str::FromStr>(&self, sql: &str) -> Result<T, ClickHouseError> {
        let lines = self.lines(sql).await?;
        match lines.as_slice() {
            [one] => one.trim().parse().map_err(|_| ClickHouseError::Decode {
                what: format!("{one:?} is not a number"),
            }),
            other => Err(ClickHouseError::Decode {
                what: format!("{} lines where one number was expected", other.len()),
            }),
        }
    }
}

/// A ClickHouse string literal: quoted, with `\` and `'` escaped. Other
/// bytes stand for themselves in ClickHouse's lexer.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Standard base64 with padding (HTTP Basic credentials only).
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_cannot_be_escaped_from() {
        assert_eq!(quote("a'b\\c"), r"'a\'b\\c'");
        assert_eq!(quote("x\0"), r"'x\0'");
    }

    #[test]
    fn basic_credentials() {
        assert_eq!(base64(b"user:pw"), "dXNlcjpwdw==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }
}
