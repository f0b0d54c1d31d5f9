//! `gotalk serve --metrics HOST:PORT`: the process's metrics (the
//! runtime's, and `MetricsLayer`'s on every operation) as Prometheus text
//! at `http://HOST:PORT/metrics`.

mod histogram;
mod recorder;
mod render;

use std::{io, net::SocketAddr};

use axum::{Router, http::header, routing::get};

use recorder::{PrometheusBuilder, PrometheusHandle};

/// Latency buckets of `gotalk_request_duration_seconds`, in seconds: from
/// a handler answered inline (tens of microseconds) to a slow one.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Installs the Prometheus recorder for the whole process (before any
/// connection counts anything) and serves it on `addr`; returns the address
/// bound.
pub(crate) async fn serve(addr: &str) -> io::Result<SocketAddr> {
    let handle = PrometheusBuilder::default()
        .buckets_for("gotalk_request_duration_seconds", LATENCY_BUCKETS)
        .install()
        .map_err(|_| io::Error::other("a metrics recorder is installed already"))?;
    let tcp = tokio::net::TcpListener::bind(addr).await?;
    let local = tcp.local_addr()?;
    let app = Router::new().route("/metrics", get(move || render(handle.clone())));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(tcp, app).await {
            tracing::warn!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(local)
}

async fn render(handle: PrometheusHandle) -> ([(header::HeaderName, &'static str); 1], String) {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
}
