//! `gotalk serve --metrics HOST:PORT`: the process's metrics (the
//! runtime's, and `MetricsLayer`'s on every operation) as Prometheus text
//! at `http://HOST:PORT/metrics`.

use std::{io, net::SocketAddr, time::Duration};

use axum::{Router, http::header, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets of `gotalk_request_duration_seconds`, in seconds: from
/// a handler answered inline (tens of microseconds) to a slow one.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are folded into the rendered buckets (the
/// recorder keeps them until then).
const UPKEEP: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder for the whole process (before any
/// connection counts anything) and serves it on `addr`; returns the address
/// bound.
pub(crate) async fn serve(addr: &str) -> io::Result<SocketAddr> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("gotalk_request_duration_seconds".to_owned()),
            LATENCY_BUCKETS,
        )
        .map_err(io::Error::other)?
        .install_recorder()
        .map_err(io::Error::other)?;
    let tcp = tokio::net::TcpListener::bind(addr).await?;
    let local = tcp.local_addr()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = Router::new().route("/metrics", get(move || render(handle.clone())));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(tcp, app).await {
            tracing::warn!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(local)
}

async fn render(handle: PrometheusHandle) -> ([(header::HeaderName, &'static str); 1], String) {
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
}
