//! The agent's wire format: length-prefixed JSON frames on a Unix socket.
//!
//! A frame is a 4-byte big-endian length and that many bytes of JSON. Every
//! connection carries requests from the helper and one response to each, in
//! order. Frames that carry a token are built in zeroized buffers. Only two
//! processes of the same user ever speak this (the agent checks the peer's uid).

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

use crate::api::ApiError;
use crate::cache::{Dropped, EntryInfo, Grant, Key, Origin};
use crate::net::Network;
use crate::secret::Secret;

/// The largest frame either side accepts.
pub const MAX_FRAME: usize = 4 * 1024 * 1024;

/// A helper's request to the agent.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// A cached token with at least `min_ttl` seconds left (default: the cache's margin).
    Get { key: Key, min_ttl: Option<u64> },
    /// Mint (once, however many ask) with this grant, which the agent drops afterwards.
    Mint {
        key: Key,
        ttl: u64,
        min_ttl: Option<u64>,
        subject: String,
        /// The requester's remaining time, in milliseconds.
        timeout_ms: u64,
        /// The requester's proxies and CA certificates (never the agent's own).
        network: Box<Network>,
        grant: Grant,
    },
    /// Forget tokens: those equal to `password`, else all for the API (and workspace/repo).
    Erase {
        api: String,
        workspace: Option<String>,
        repo: Option<String>,
        password: Option<Secret>,
        /// Only tokens minted from this origin (a CI job's broker tokens).
        #[serde(default)]
        origin: Option<Origin>,
    },
    /// Forget every token for the API (and workspace), e.g. on `logout`.
    Drain {
        api: String,
        workspace: Option<String>,
    },
    /// What the agent holds, fingerprints only.
    Status,
}

/// The agent's answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    Token {
        token: Secret,
        expires_at: i64,
    },
    Miss,
    /// The mint failed: the API's (or broker's) error, as it is.
    Failed(ApiError),
    Dropped(Vec<Dropped>),
    Status(AgentStatus),
}

/// The agent's state, as `status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentStatus {
    pub pid: u32,
    pub uptime_secs: u64,
    pub exchanges: u64,
    pub entries: Vec<EntryInfo>,
}

/// A frame's bytes, zeroized when dropped.
pub type Frame = Zeroizing<Vec<u8>>;

/// Encodes a message as a frame.
pub fn encode(message: &impl Serialize) -> io::Result<Frame> {
    let mut frame = Zeroizing::new(vec![0u8; 4]);
    serde_json::to_writer(&mut *frame, message)?;
    let len = u32::try_from(frame.len() - 4)
        .ok()
        .filter(|&n| n as usize <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "frame too large"))?;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    Ok(frame)
}

/// Decodes a frame body.
pub fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> io::Result<T> {
    serde_json::from_slice(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn body_len(header: [u8; 4]) -> io::Result<usize> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    Ok(len)
}

/// Writes one message (blocking side: the helper).
pub fn send(stream: &mut impl Write, message: &impl Serialize) -> io::Result<()> {
    stream.write_all(&encode(message)?)?;
    stream.flush()
}

/// Reads one message (blocking side: the helper).
pub fn receive<T: for<'de> Deserialize<'de>>(stream: &mut impl Read) -> io::Result<T> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header)?;
    let mut body = Zeroizing::new(vec![0u8; body_len(header)?]);
    stream.read_exact(&mut body)?;
    decode(&body)
}

/// Writes one message (async side: the agent).
pub async fn send_async(
    stream: &mut (impl AsyncWriteExt + Unpin),
    message: &impl Serialize,
) -> io::Result<()> {
    stream.write_all(&encode(message)?).await?;
    stream.flush().await
}

/// Reads one message (async side: the agent); `None` at a clean end of stream.
pub async fn receive_async<T: for<'de> Deserialize<'de>>(
    stream: &mut (impl AsyncReadExt + Unpin),
) -> io::Result<Option<T>> {
    let mut header = [0u8; 4];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut body = Zeroizing::new(vec![0u8; body_len(header)?]);
    stream.read_exact(&mut body).await?;
    decode(&body).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let request = Request::Mint {
            key: Key {
                api: "https://api.githosted.dev/".into(),
                workspace: "acme".into(),
                repo: "app".into(),
                permission: crate::token::Permission::Write,
                origin: Origin::Keychain,
            },
            ttl: 3600,
            min_ttl: None,
            subject: "s".into(),
            timeout_ms: 20_000,
            network: Box::default(),
            grant: Grant::Parent {
                token: Secret::new("gw_parent".into()),
                workspace: None,
            },
        };
        let mut buf = Vec::new();
        send(&mut buf, &request).unwrap();
        let back: Request = receive(&mut &buf[..]).unwrap();
        match back {
            Request::Mint {
                grant:
                    Grant::Parent {
                        token: parent,
                        workspace: None,
                    },
                key,
                ..
            } => {
                assert_eq!(parent.expose(), "gw_parent");
                assert_eq!(key.repo, "app");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut buf = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        buf.extend([0u8; 16]);
        assert!(receive::<Response>(&mut &buf[..]).is_err());
    }

    #[test]
    fn truncated_frames_are_errors() {
        let mut buf = Vec::new();
        send(&mut buf, &Response::Miss).unwrap();
        buf.pop();
        assert!(receive::<Response>(&mut &buf[..]).is_err());
    }
}
