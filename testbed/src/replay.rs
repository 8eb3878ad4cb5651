//! Replaying requests recorded from a seed's own client (`testbed/fixtures/replay/`), byte for
//! byte, to a fake: each request file is sent unchanged on a connection of its own, and the
//! answer's status and body come back for the test to check.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One recorded request: its file's name (`NN-what`), its bytes, and the status recorded.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `NN-what`, the file name without its extension.
    pub name: String,
    /// The request, exactly as the client sent it.
    pub bytes: Vec<u8>,
    /// The status the fake answered when it was recorded.
    pub status: u16,
}

/// The recordings in `dir` (`NN-what.http` with `NN-what.status`), in order.
pub fn recordings(dir: &Path) -> io::Result<Vec<Recorded>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "http"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|path| {
            let status = std::fs::read_to_string(path.with_extension("status"))?;
            Ok(Recorded {
                name: path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                bytes: std::fs::read(&path)?,
                status: status.trim().parse().map_err(io::Error::other)?,
            })
        })
        .collect()
}

/// Sends `request` unchanged to `addr` and reads the answer: its status and body (by its
/// `Content-Length`).
pub async fn send(addr: SocketAddr, request: &[u8]) -> io::Result<(u16, Vec<u8>)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::other("the answer ended before its head did"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no status in {head:?}")))?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok((status, body))
}
