//! The scrape target a sender scrapes: each scrape gets the case's exposition for that
//! scrape's index (so series can appear, change and disappear between scrapes).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One scrape's answer.
#[derive(Debug, Clone)]
pub struct Exposition {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Exposition {
    pub fn text(body: impl Into<String>) -> Exposition {
        Exposition { status: 200, content_type: TEXT, body: body.into() }
    }
}

/// The answer to the `n`th scrape (0-based).
pub type Script = Arc<dyn Fn(usize) -> Exposition + Send + Sync>;

#[derive(Clone)]
struct Shared {
    script: Script,
    scrapes: Arc<AtomicUsize>,
}

async fn handle(State(s): State<Shared>) -> Response {
    let n = s.scrapes.fetch_add(1, Ordering::SeqCst);
    let e = (s.script)(n);
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, e.content_type)], e.body).into_response()
}

#[derive(Debug)]
pub struct Target {
    pub addr: SocketAddr,
    scrapes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Target {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Target {
    pub async fn start(script: Script) -> std::io::Result<Target> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let scrapes = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(handle))
            .with_state(Shared { script, scrapes: scrapes.clone() });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Target { addr, scrapes, task })
    }

    /// Scrapes served so far.
    pub fn scrapes(&self) -> usize {
        self.scrapes.load(Ordering::SeqCst)
    }
}
