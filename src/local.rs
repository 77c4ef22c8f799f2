//! A stand-in for CloudFormation's ResponseURL on 127.0.0.1, for the local command line and tests.
//!
//! It answers each PUT with 200 (or, when asked, refuses the first few with 503 to exercise the
//! sender's retries) and hands over every body it received.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

pub struct ResponseCatcher {
    pub url: String,
    bodies: mpsc::UnboundedReceiver<Vec<u8>>,
    pub attempts: Arc<AtomicUsize>,
}

impl ResponseCatcher {
    pub async fn start() -> std::io::Result<ResponseCatcher> {
        ResponseCatcher::refusing(0).await
    }

    /// Refuses the first `refusals` PUTs with HTTP 503.
    pub async fn refusing(refusals: usize) -> std::io::Result<ResponseCatcher> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!(
            "http://{}/cloudformation-response?X-Amz-Signature=local",
            listener.local_addr()?
        );
        let (sender, bodies) = mpsc::unbounded_channel();
        let attempts = Arc::new(AtomicUsize::new(0));
        let counter = attempts.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sender = sender.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let attempt = counter.fetch_add(1, Ordering::SeqCst);
                    if let Ok(Some(body)) = serve_one(stream, attempt < refusals).await {
                        sender.send(body).ok();
                    }
                });
            }
        });
        Ok(ResponseCatcher {
            url,
            bodies,
            attempts,
        })
    }

    /// The next accepted body, or None when none arrives within `wait`.
    pub async fn next(&mut self, wait: std::time::Duration) -> Option<Vec<u8>> {
        tokio::time::timeout(wait, self.bodies.recv())
            .await
            .ok()
            .flatten()
    }

    /// A body that is already there, without waiting.
    pub fn try_next(&mut self) -> Option<Vec<u8>> {
        self.bodies.try_recv().ok()
    }
}

async fn serve_one(mut stream: TcpStream, refuse: bool) -> std::io::Result<Option<Vec<u8>>> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        received.extend_from_slice(&chunk[..n]);
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if received.len() > 64 * 1024 {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&received[..header_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while received.len() < header_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        received.extend_from_slice(&chunk[..n]);
    }
    let status = if refuse {
        "503 Service Unavailable"
    } else {
        "200 OK"
    };
    stream
        .write_all(
            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    stream.shutdown().await.ok();
    if refuse {
        return Ok(None);
    }
    Ok(Some(
        received[header_end..(header_end + length).min(received.len())].to_vec(),
    ))
}
