//! The command line's way of being CloudFormation and Lambda at once: a stand-in for the
//! ResponseURL on 127.0.0.1 ([`ResponseCatcher`]), and a loop that follows hand-overs in this
//! process ([`invoke_until_answered`]). The Lambda's `bootstrap` never calls it (so its binary
//! does not carry it); the tests use it to drive the handler as the command line does.
//!
//! The catcher answers each PUT with 200 (or, when asked, refuses the first few with 503 to
//! exercise the sender's retries) and hands over every body it received.

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

/// Hands over to the next turn of a loop in this process: how the local command line and the
/// tests follow a build across invocations, with the same payload Lambda would carry.
#[derive(Clone, Default)]
pub struct InProcessScheduler {
    queue: Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
}

impl InProcessScheduler {
    /// The next payload, as the JSON text an asynchronous invocation would deliver.
    pub fn take(&self) -> Option<String> {
        self.queue.lock().expect("not poisoned").pop_front()
    }
}

impl crate::handler::Scheduler for InProcessScheduler {
    fn hand_over(
        &self,
        payload: serde_json::Value,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send {
        let queue = self.queue.clone();
        async move {
            queue
                .lock()
                .expect("not poisoned")
                .push_back(payload.to_string());
            Ok(())
        }
    }
}

/// Runs `event` to its answer, starting a fresh "invocation" (with fresh limits from `limits`)
/// after every hand-over. Returns the answer and how many hand-overs it took, or `None` when
/// another invocation was already building the request (it answers, not this one).
pub async fn invoke_until_answered(
    event: serde_json::Value,
    aws: &crate::aws::Aws,
    sink: &impl crate::handler::ResponseSink,
    limits: impl Fn() -> crate::handler::Limits,
) -> Result<Option<(crate::cfn::Response, u32)>, crate::handler::HandleError> {
    use crate::handler::{Handled, handle};
    let scheduler = InProcessScheduler::default();
    let mut event = event;
    let mut handed_over = 0;
    loop {
        match handle(event, aws, sink, &scheduler, limits()).await? {
            Handled::Answered(response) | Handled::Repeated(response) => {
                return Ok(Some((response, handed_over)));
            }
            Handled::Yielded
            | Handled::Cancelled { .. }
            | Handled::Swept { .. }
            | Handled::EndedKept { .. }
            | Handled::Expanded(_) => {
                return Ok(None);
            }
            Handled::HandedOver { hand_overs } => {
                handed_over = hand_overs;
                let payload = scheduler.take().expect("a hand-over queued its payload");
                tracing::info!(
                    hand_overs,
                    payload_bytes = payload.len(),
                    "hand-over: continuing in a fresh invocation"
                );
                event = serde_json::from_str(&payload).expect("payloads are JSON");
            }
        }
    }
}
