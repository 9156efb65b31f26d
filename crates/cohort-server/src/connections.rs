//! Accepting connections under limits, so that idle or slow clients cannot make the server
//! unreachable, and stopping with a deadline.
//!
//! - **Header timeout**: a connection must send a whole request head within
//!   [`ConnectionLimits::header_timeout`]. The clock also runs while a keep-alive connection
//!   waits for its next request, so it is the idle timeout as well: an idle connection is closed
//!   when it runs out.
//! - **Body timeout**: a request's whole body must arrive within
//!   [`ConnectionLimits::body_timeout`] (a total, not a gap between packets, so a client sending a
//!   byte a second cannot hold a connection); see [`DeadlineBody`].
//! - **Connection cap**: at most [`ConnectionLimits::max_connections`] connections at once. A new
//!   connection at the cap first displaces the oldest connection with no request in flight (as a
//!   reverse proxy reuses its idle keep-alive connections); when every connection is busy, it is
//!   answered `503 Service Unavailable` with `Retry-After` and closed.
//! - **Shutdown deadline**: on shutdown, idle connections close at once and requests in flight
//!   get [`ConnectionLimits::shutdown_deadline`] to finish; what remains is then cut.
//!
//! ```no_run
//! # async fn demo(app: axum::Router) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! cohort_server::connections::serve(listener, app, cohort_server::ConnectionLimits::default(), async {
//!     let _ = stopped.await;
//! })
//! .await
//! # }
//! ```

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// The limits on connections; every field has a `cohort serve` flag and a `COHORT_*` variable
/// (docs/API.md, "Limits").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time to send a request head, and time a keep-alive connection may sit idle.
    pub header_timeout: Duration,
    /// Time to send a request's whole body.
    pub body_timeout: Duration,
    /// Time requests in flight get to finish when the server stops.
    pub shutdown_deadline: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            shutdown_deadline: Duration::from_secs(10),
        }
    }
}

impl ConnectionLimits {
    /// The connection cap that this process's open-file limit allows: each connection is a
    /// descriptor, and the store, the lake and the logs need some of their own. A cap above
    /// the limit would turn overload into failed `accept` calls and failed file opens instead
    /// of clear refusals.
    pub fn fitted_to_open_files(mut self) -> Self {
        const RESERVED_FILES: usize = 256;
        if let Some(limit) = raise_open_file_limit() {
            let fits = limit.saturating_sub(RESERVED_FILES).max(16);
            if fits < self.max_connections {
                tracing::warn!(
                    open_files = limit,
                    "the open-file limit allows {fits} connections, fewer than the {} asked for",
                    self.max_connections
                );
                self.max_connections = fits;
            }
        }
        self
    }
}

/// Raises the soft open-file limit to the hard one (as most servers do at start) and returns
/// the soft limit in force.
fn raise_open_file_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    usize::try_from(limit.rlim_cur).ok()
}

/// One open connection, as the cap sees it.
struct Tracked {
    /// Requests being answered on it.
    in_flight: AtomicUsize,
    /// Asks the connection to close once no request is in flight.
    close: Notify,
}

/// The open connections, oldest first.
#[derive(Default)]
struct Registry {
    open: Mutex<BTreeMap<u64, Arc<Tracked>>>,
}

impl Registry {
    /// Registers a new connection if the cap allows, displacing the oldest idle one when full.
    fn admit(&self, id: u64, cap: usize) -> Option<Arc<Tracked>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= cap {
            let idle = open
                .iter()
                .find(|(_, c)| c.in_flight.load(Ordering::Acquire) == 0)
                .map(|(id, _)| *id)?;
            if let Some(displaced) = open.remove(&idle) {
                displaced.close.notify_one();
                metrics::counter!("cohort_connections_displaced_total").increment(1);
            }
        }
        let tracked = Arc::new(Tracked {
            in_flight: AtomicUsize::new(0),
            close: Notify::new(),
        });
        open.insert(id, tracked.clone());
        metrics::gauge!("cohort_connections_open").set(open.len() as f64);
        Some(tracked)
    }

    fn remove(&self, id: u64) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(&id);
        metrics::gauge!("cohort_connections_open").set(open.len() as f64);
    }

    fn close_all(&self) {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        for tracked in open.values() {
            tracked.close.notify_one();
        }
    }
}

/// Counts a request as in flight on its connection until dropped.
struct InFlight(Arc<Tracked>);

impl InFlight {
    fn new(tracked: &Arc<Tracked>) -> Self {
        tracked.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(tracked.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `app` on `listener` under `limits` until `shutdown` completes, then stops within the
/// shutdown deadline. Handlers can extract `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let registry = Arc::new(Registry::default());
    let mut connections = JoinSet::new();
    let mut next_id = 0u64;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or a connection reset before it was accepted: the
                    // listener itself is fine; pause briefly so a descriptor shortage cannot spin.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            // Reap finished connections as they end so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        next_id += 1;
        let id = next_id;
        let Some(tracked) = registry.admit(id, limits.max_connections) else {
            metrics::counter!("cohort_connections_refused_total").increment(1);
            connections.spawn(refuse(stream));
            continue;
        };
        let (app, registry) = (app.clone(), registry.clone());
        connections.spawn(async move {
            serve_connection(stream, peer, app, tracked, limits).await;
            registry.remove(id);
        });
    }
    drop(listener);
    registry.close_all();
    let drained = tokio::time::timeout(limits.shutdown_deadline, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            "requests still in flight after the shutdown deadline of {:?} were cut",
            limits.shutdown_deadline
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    tracked: Arc<Tracked>,
    limits: ConnectionLimits,
) {
    let _ = stream.set_nodelay(true);
    let counted = tracked.clone();
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let in_flight = InFlight::new(&counted);
            let mut request =
                request.map(|body| Body::new(DeadlineBody::new(body, limits.body_timeout)));
            request.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await;
                drop(in_flight);
                response
            }
        });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => {
            if let Err(e) = served {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        }
        () = tracked.close.notified() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Answers a connection over the cap and closes it. The request is not read, so the answer
/// carries the CORS headers any page may read (no credentials are involved): a browser SDK
/// then sees the 503 and its `Retry-After` instead of a network error.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str = r#"{"error":{"code":"too_many_connections","message":"the server is at its connection limit; retry shortly"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\naccess-control-allow-origin: *\r\naccess-control-expose-headers: retry-after\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// A request body that must arrive whole before a deadline set when the request head arrived.
pub struct DeadlineBody<B> {
    inner: B,
    limit: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<B> DeadlineBody<B> {
    pub fn new(inner: B, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

/// The body did not arrive within the body timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(pub Duration);

impl<B> http_body::Body for DeadlineBody<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.limit)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// True when a body error (as axum reports it) is the body timeout.
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.is::<BodyTimedOut>() {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_registry_displaces_its_oldest_idle_connection() {
        let registry = Registry::default();
        let first = registry.admit(1, 2).unwrap();
        let second = registry.admit(2, 2).unwrap();
        let _busy = InFlight::new(&first);
        // The first is busy, so the second (idle) makes way.
        let third = registry.admit(3, 2);
        assert!(third.is_some());
        let open: Vec<u64> = registry.open.lock().unwrap().keys().copied().collect();
        assert_eq!(open, vec![1, 3]);
        drop(second);
    }

    #[test]
    fn a_registry_of_busy_connections_refuses() {
        let registry = Registry::default();
        let first = registry.admit(1, 1).unwrap();
        let _busy = InFlight::new(&first);
        assert!(registry.admit(2, 1).is_none());
    }

    /// Sends one byte, then nothing, as a slow-body attacker does.
    struct Trickle {
        sent: bool,
    }

    impl http_body::Body for Trickle {
        type Data = axum::body::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            if self.sent {
                return Poll::Pending;
            }
            self.sent = true;
            Poll::Ready(Some(Ok(http_body::Frame::data(
                axum::body::Bytes::from_static(b"{"),
            ))))
        }
    }

    #[tokio::test]
    async fn a_body_that_trickles_fails_at_its_deadline() {
        let body = Body::new(DeadlineBody::new(
            Trickle { sent: false },
            Duration::from_millis(50),
        ));
        let error = axum::body::to_bytes(body, 1024)
            .await
            .expect_err("the body never ends");
        assert!(is_body_timeout(&error), "{error}");
    }
}
