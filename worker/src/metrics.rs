//! Prometheus metrics of a loading process (`ferry-worker`, `ferry-coordinator migrate`): the
//! exposition built from the process's [`Progress`] at each scrape, the `/metrics` HTTP endpoint
//! (pull), and one push to a Pushgateway when the process ends (for Jobs whose pods may end before
//! any scrape).
//!
//! # Metrics
//! Counters only count committed work (a rolled-back chunk is never counted), so summed over every
//! process of a run they equal the ledger's counts once the run is finalized:
//! - `ferry_items_loaded_total`: items committed as rows (the ledger's `loaded_rows`);
//! - `ferry_items_rejected_total{reason}`: lines committed to `ferry.rejects`, by reason class;
//! - `ferry_items_filtered_total`: items skipped by a routing filter;
//! - `ferry_bytes_read_total`: stored (compressed) bytes read from data files;
//! - `ferry_chunks_committed_total`, `ferry_chunk_commit_duration_seconds` (histogram);
//! - `ferry_shards_total{outcome}`: shard loads by how they ended (`done`, `already_done`,
//!   `lost_race`, `failed`, `stopped`, `error`);
//! - `ferry_build_info{binary,version}` and `ferry_process_start_time_seconds`.
//!
//! A process that samples the ledger (`migrate`, `status --watch --metrics-addr`) also exposes
//! the run's committed counts as the last sample gave them, the fleet's work rather than its own:
//! gauges `ferry_run_items_committed`, `ferry_run_items_expected`, `ferry_run_rows_loaded`,
//! `ferry_run_rows_rejected`, `ferry_run_values_spilled`, `ferry_run_bytes_committed`,
//! `ferry_run_bytes_expected`, `ferry_run_shards{state}` (`done`, `loading`, `waiting`, `failed`)
//! and `ferry_run_sampled_at_seconds`. They are the figures of `migrate`'s display and of
//! `status` (one code, [`RunSample`]), so all three agree; don't sum them over processes.
//!
//! No label names a shard or a run: a fleet's series stay few whatever the export's size.
//!
//! # Push
//! `PUT <gateway>/metrics/job/<job>/instance/<instance>` replaces the group of this process, so
//! every worker pod (one instance each, by default its `HOSTNAME`, the pod name) keeps its own
//! group and a retried pod adds a group instead of overwriting another's; `sum by (job)` over the
//! groups is the fleet's total.
//!
//! A Pushgateway behind basic authentication is given as `http://user:password@host:port`: the
//! credentials go in an `Authorization` header, never in the request line, and every message
//! that names the URL masks the password ([`ferry_shared::redact`]).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::progress::{Progress, RunSample};
use ferry_shared::config::MetricsSettings;

/// The `Content-Type` of the exposition (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Attempts of the push at exit before giving up (a warning, never a failed run).
const PUSH_ATTEMPTS: u32 = 3;

/// Errors of the metrics endpoint and the push.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listen address could not be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The Pushgateway URL is unusable.
    #[error("pushgateway url {url:?}: {reason}")]
    PushUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The push failed.
    #[error("push to {url} failed: {reason}")]
    Push {
        /// The grouping URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// A process's metrics: a registry whose one collector reads [`Progress`] at each scrape.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

/// Reads the live counters when a scrape (or the push) encodes them.
#[derive(Debug)]
struct ProgressCollector {
    progress: Arc<Progress>,
    binary: &'static str,
    started: f64,
}

impl Metrics {
    /// Metrics of `progress`, for the process `binary` (`ferry-worker`, `ferry-migrate`).
    pub fn new(progress: Arc<Progress>, binary: &'static str) -> Metrics {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProgressCollector {
            progress,
            binary,
            started,
        }));
        Metrics { registry }
    }

    /// The exposition in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

impl Collector for ProgressCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let progress = &self.progress;
        let load = |value: &std::sync::atomic::AtomicU64| value.load(Ordering::Relaxed);
        counter(
            &mut encoder,
            "ferry_items_loaded",
            "Items committed as rows.",
            load(&progress.rows_loaded),
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "ferry_items_rejected",
                "Lines committed to ferry.rejects, by reason class.",
                None,
                MetricType::Counter,
            )?;
            for (reason, count) in progress.rejects_by_reason() {
                ConstCounter::new(count).encode(family.encode_family(&[("reason", reason)])?)?;
            }
        }
        {
            let gauge = ConstGauge::new(progress.shards_in_progress.load(Ordering::Relaxed));
            gauge.encode(encoder.encode_descriptor(
                "ferry_shards_in_progress",
                "Shards this process is loading now.",
                None,
                gauge.metric_type(),
            )?)?;
        }
        counter(
            &mut encoder,
            "ferry_items_filtered",
            "Items skipped by a routing filter (committed).",
            load(&progress.filtered),
        )?;
        counter(
            &mut encoder,
            "ferry_bytes_read",
            "Stored (compressed) bytes read from export data files.",
            load(&progress.bytes),
        )?;
        counter(
            &mut encoder,
            "ferry_chunks_committed",
            "Chunks committed (one transaction each, with the shard's checkpoint).",
            load(&progress.chunks),
        )?;
        {
            let snapshot = progress.commit_seconds.snapshot();
            // The encoder accumulates per-bucket counts itself; the snapshot is cumulative.
            let mut previous = 0;
            let mut buckets: Vec<(f64, u64)> = snapshot
                .cumulative
                .iter()
                .map(|(bound, cumulative)| {
                    let in_bucket = cumulative - previous;
                    previous = *cumulative;
                    (*bound, in_bucket)
                })
                .collect();
            buckets.push((f64::INFINITY, snapshot.count.saturating_sub(previous)));
            let mut metric = encoder.encode_descriptor(
                "ferry_chunk_commit_duration_seconds",
                "Time from a chunk's last row sent to its checkpoint committed.",
                None,
                MetricType::Histogram,
            )?;
            metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                snapshot.sum_seconds,
                snapshot.count,
                &buckets,
                None,
            )?;
        }
        {
            let mut family = encoder.encode_descriptor(
                "ferry_shards",
                "Shard loads by how they ended.",
                None,
                MetricType::Counter,
            )?;
            for (end, count) in progress.shard_ends() {
                ConstCounter::new(count)
                    .encode(family.encode_family(&[("outcome", end.label())])?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "ferry_build_info",
                "The binary and its version (always 1).",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(1i64).encode(family.encode_family(&[
                ("binary", self.binary),
                ("version", env!("CARGO_PKG_VERSION")),
            ])?)?;
        }
        if let Some(run) = progress.run_sample() {
            encode_run(&mut encoder, &run)?;
        }
        let started = ConstGauge::new(self.started);
        started.encode(encoder.encode_descriptor(
            "ferry_process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds.",
            None,
            started.metric_type(),
        )?)?;
        Ok(())
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

/// The `ferry_run_*` gauges of a ledger sample.
fn encode_run(encoder: &mut DescriptorEncoder, run: &RunSample) -> Result<(), std::fmt::Error> {
    let gauges = [
        (
            "ferry_run_items_committed",
            "The run's items committed (loaded, rejected or filtered), per the ledger.",
            run.items_committed,
        ),
        (
            "ferry_run_rows_loaded",
            "The run's rows loaded, per the ledger.",
            run.rows_loaded,
        ),
        (
            "ferry_run_rows_rejected",
            "The run's lines rejected, per the ledger.",
            run.rows_rejected,
        ),
        (
            "ferry_run_values_spilled",
            "The run's values spilled to the overflow column, per the ledger.",
            run.values_spilled,
        ),
        (
            "ferry_run_bytes_committed",
            "Stored bytes of the export accounted for by committed lines, per the ledger.",
            run.bytes_committed,
        ),
        (
            "ferry_run_bytes_expected",
            "Stored bytes of the export's data files.",
            run.bytes_total,
        ),
    ];
    for (name, help, value) in gauges {
        gauge(encoder, name, help, value)?;
    }
    if let Some(expected) = run.items_expected {
        gauge(
            encoder,
            "ferry_run_items_expected",
            "The run's items per the export's manifest.",
            expected,
        )?;
    }
    {
        let mut family = encoder.encode_descriptor(
            "ferry_run_shards",
            "The run's shards by state, per the ledger.",
            None,
            MetricType::Gauge,
        )?;
        for (state, count) in run.shards() {
            ConstGauge::new(i64::try_from(count).unwrap_or(i64::MAX))
                .encode(family.encode_family(&[("state", state)])?)?;
        }
    }
    let sampled = ConstGauge::new(run.sampled_at);
    sampled.encode(encoder.encode_descriptor(
        "ferry_run_sampled_at_seconds",
        "When the ledger was last read for the ferry_run_* gauges, since the Unix epoch.",
        None,
        sampled.metric_type(),
    )?)
}

/// The `/metrics` endpoint, serving until dropped.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `addr` and serves `GET /metrics` (and `GET /healthz`) from `metrics`.
    pub async fn bind(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
    ) -> Result<MetricsServer, MetricsError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let task = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot accept a metrics connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let metrics = metrics.clone();
                        async move { Ok::<_, std::convert::Infallible>(respond(&metrics, &request)) }
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "metrics connection ended");
                    }
                });
            }
        });
        tracing::info!(addr = %local_addr, "serving metrics");
        Ok(MetricsServer { local_addr, task })
    }

    /// The bound address (the port the kernel chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn respond(metrics: &Metrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            (StatusCode::OK, CONTENT_TYPE, metrics.render())
        }
        (&Method::GET | &Method::HEAD, "/healthz") => {
            (StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into())
        }
        (&Method::GET | &Method::HEAD, _) => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: metrics are at /metrics\n".into(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET\n".into(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// The Pushgateway URL of a grouping key: `<gateway>/metrics/job/<job>/instance/<instance>`,
/// with label values that are empty or hold a `/` in the gateway's base64 form.
pub fn grouping_url(gateway: &str, job: &str, instance: &str) -> Result<String, MetricsError> {
    if !(gateway.starts_with("http://") || gateway.starts_with("https://")) {
        return Err(MetricsError::PushUrl {
            url: ferry_shared::redact::url(gateway),
            reason: "expected http://host:port or https://host:port".into(),
        });
    }
    let segment = |name: &str, value: &str| {
        use base64::Engine as _;
        let plain = !value.is_empty()
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if plain {
            format!("{name}/{value}")
        } else {
            let encoded = base64::engine::general_purpose::URL_SAFE.encode(value);
            // The gateway takes `=` for an empty value's encoding.
            let encoded = if encoded.is_empty() {
                "=".into()
            } else {
                encoded
            };
            format!("{name}@base64/{encoded}")
        }
    };
    Ok(format!(
        "{}/metrics/{}/{}",
        gateway.trim_end_matches('/'),
        segment("job", job),
        segment("instance", instance)
    ))
}

/// The default instance label: `$HOSTNAME` (a pod's name), else the host name and process id.
pub fn default_instance() -> String {
    if let Some(host) = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()) {
        return host;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}-{}", std::process::id())
}

/// `url` without its userinfo, and the `Authorization` header value (HTTP basic) the userinfo
/// stood for, if it had one.
fn split_credentials(url: &str) -> (String, Option<String>) {
    let Some(scheme_end) = url.find("://").map(|at| at + 3) else {
        return (url.to_string(), None);
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (url.to_string(), None);
    };
    let decode = |text: &str| -> Vec<u8> {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex) {
                (b'%', Some(byte)) => {
                    out.push(byte);
                    i += 3;
                }
                (byte, _) => {
                    out.push(byte);
                    i += 1;
                }
            }
        }
        out
    };
    let (user, password) = rest[..at].split_once(':').unwrap_or((&rest[..at], ""));
    let mut credentials = decode(user);
    credentials.push(b':');
    credentials.extend(decode(password));
    use base64::Engine as _;
    let header = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    );
    (
        format!("{}{}", &url[..scheme_end], &rest[at + 1..]),
        Some(header),
    )
}

/// Sends the exposition to `url` (a grouping URL) with `PUT`, replacing the group. A userinfo in
/// `url` is sent as HTTP basic authentication.
pub async fn push(metrics: &Metrics, url: &str) -> Result<(), MetricsError> {
    let failed = |reason: String| MetricsError::Push {
        url: ferry_shared::redact::url(url),
        reason: ferry_shared::redact::text(&reason),
    };
    let (url, authorization) = split_credentials(url);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| failed(format!("cannot load the system's root certificates: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Full<Bytes>>(connector);
    let mut request = Request::builder()
        .method(Method::PUT)
        .uri(url)
        .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE);
    if let Some(authorization) = authorization {
        let mut value = hyper::header::HeaderValue::try_from(authorization)
            .map_err(|e| failed(e.to_string()))?;
        value.set_sensitive(true);
        request = request.header(hyper::header::AUTHORIZATION, value);
    }
    let request = request
        .body(Full::new(Bytes::from(metrics.render())))
        .map_err(|e| failed(e.to_string()))?;
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .map_err(|_| failed("no answer within 30 s".into()))?
        .map_err(|e| failed(format!("{e:?}")))?;
    let status = response.status();
    if !status.is_success() {
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        return Err(failed(format!("{status}: {}", body.trim())));
    }
    Ok(())
}

/// What a process does with its metrics: serve them while it runs and push them when it ends, as
/// `[metrics]` says.
#[derive(Debug)]
pub struct Exporter {
    metrics: Arc<Metrics>,
    server: Option<MetricsServer>,
    push_url: Option<String>,
}

impl Exporter {
    /// Starts serving (when `settings.addr` is set) the metrics of `progress`; `job` is the
    /// Pushgateway job when `[metrics] job` is not set.
    pub async fn start(
        settings: &MetricsSettings,
        progress: Arc<Progress>,
        binary: &'static str,
        job: &str,
    ) -> Result<Exporter, MetricsError> {
        let metrics = Arc::new(Metrics::new(progress, binary));
        let push_url = match &settings.pushgateway_url {
            Some(gateway) => {
                let job = settings.job.as_deref().unwrap_or(job);
                let instance = settings.instance.clone().unwrap_or_else(default_instance);
                Some(grouping_url(gateway, job, &instance)?)
            }
            None => None,
        };
        let server = match settings.addr {
            Some(addr) => Some(MetricsServer::bind(addr, metrics.clone()).await?),
            None => None,
        };
        Ok(Exporter {
            metrics,
            server,
            push_url,
        })
    }

    /// Where `/metrics` is served, if it is.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(MetricsServer::local_addr)
    }

    /// It serves or pushes the metrics (so the run's gauges are worth sampling).
    pub fn active(&self) -> bool {
        self.server.is_some() || self.push_url.is_some()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Pushes the final values (when a Pushgateway is configured) and stops serving. A push that
    /// keeps failing is logged, never an error: the load's outcome does not depend on it.
    pub async fn finish(self) {
        let Some(url) = &self.push_url else { return };
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=PUSH_ATTEMPTS {
            match push(&self.metrics, url).await {
                Ok(()) => {
                    tracing::info!(url = %ferry_shared::redact::url(url), "pushed metrics");
                    return;
                }
                Err(e) if attempt < PUSH_ATTEMPTS => {
                    tracing::warn!(attempt, error = %e, "cannot push metrics: retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => tracing::warn!(error = %e, "cannot push metrics: giving up"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::ShardEnd;

    #[test]
    fn run_gauges_are_the_last_ledger_sample() {
        let progress = Arc::new(Progress::default());
        let metrics = Metrics::new(progress.clone(), "ferry-migrate");
        assert!(
            !metrics.render().contains("ferry_run_"),
            "no sample, no gauge"
        );
        progress.set_run_sample(RunSample {
            items_expected: Some(6_000),
            items_committed: 2_000,
            rows_loaded: 1_997,
            rows_rejected: 3,
            values_spilled: 7,
            bytes_total: 90_000,
            bytes_committed: 30_000,
            shards_done: 3,
            shards_loading: 1,
            shards_waiting: 7,
            shards_failed: 1,
            sampled_at: 1_800_000_000.5,
        });
        let text = metrics.render();
        for line in [
            "ferry_run_items_committed 2000",
            "ferry_run_items_expected 6000",
            "ferry_run_rows_loaded 1997",
            "ferry_run_rows_rejected 3",
            "ferry_run_values_spilled 7",
            "ferry_run_bytes_committed 30000",
            "ferry_run_bytes_expected 90000",
            "ferry_run_shards{state=\"done\"} 3",
            "ferry_run_shards{state=\"loading\"} 1",
            "ferry_run_shards{state=\"waiting\"} 7",
            "ferry_run_shards{state=\"failed\"} 1",
            "ferry_run_sampled_at_seconds 1800000000.5",
            "# TYPE ferry_run_shards gauge",
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line} in:\n{text}");
        }
    }

    #[test]
    fn exposition_reads_progress_at_render_time() {
        let progress = Arc::new(Progress::default());
        let metrics = Metrics::new(progress.clone(), "ferry-worker");
        let before = metrics.render();
        assert!(
            before.contains("\nferry_items_loaded_total 0\n"),
            "{before}"
        );
        assert!(
            before.contains("# TYPE ferry_items_rejected_total counter"),
            "{before}"
        );
        assert!(
            before.contains("\nferry_items_rejected_total{reason=\"key_conflict\"} 0\n"),
            "every reason shows from the start: {before}"
        );
        progress.chunk_committed(
            7,
            2,
            ["malformed", "cast", "malformed"],
            Duration::from_millis(30),
        );
        progress.chunk_committed(5, 0, [], Duration::from_secs(60));
        progress.bytes.fetch_add(1234, Ordering::Relaxed);
        progress.shard_ended(ShardEnd::Done);
        let text = metrics.render();
        for line in [
            "ferry_items_loaded_total 12",
            "ferry_items_rejected_total{reason=\"cast\"} 1",
            "ferry_items_rejected_total{reason=\"malformed\"} 2",
            "ferry_items_filtered_total 2",
            "ferry_bytes_read_total 1234",
            "ferry_chunks_committed_total 2",
            "ferry_chunk_commit_duration_seconds_count 2",
            "ferry_chunk_commit_duration_seconds_bucket{le=\"0.025\"} 0",
            "ferry_chunk_commit_duration_seconds_bucket{le=\"0.05\"} 1",
            "ferry_chunk_commit_duration_seconds_bucket{le=\"30\"} 1",
            "ferry_chunk_commit_duration_seconds_bucket{le=\"+Inf\"} 2",
            "ferry_shards_total{outcome=\"done\"} 1",
            "ferry_shards_total{outcome=\"lost_race\"} 0",
            "ferry_build_info{binary=\"ferry-worker\",version=\"0.1.0\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        let sum_line = text
            .lines()
            .find(|l| l.starts_with("ferry_chunk_commit_duration_seconds_sum "))
            .expect("sum");
        let sum: f64 = sum_line.split(' ').nth(1).unwrap().parse().unwrap();
        assert!((sum - 60.03).abs() < 1e-9, "{sum_line}");
    }

    #[test]
    fn grouping_urls_encode_awkward_values() {
        assert_eq!(
            grouping_url("http://gw:9091/", "ferry-worker", "pod-abc").unwrap(),
            "http://gw:9091/metrics/job/ferry-worker/instance/pod-abc"
        );
        assert_eq!(
            grouping_url("http://gw:9091", "ferry", "a/b").unwrap(),
            "http://gw:9091/metrics/job/ferry/instance@base64/YS9i"
        );
        assert_eq!(
            grouping_url("http://gw:9091", "ferry", "").unwrap(),
            "http://gw:9091/metrics/job/ferry/instance@base64/="
        );
        assert!(grouping_url("gw:9091", "ferry", "x").is_err());
    }

    /// A one-request Pushgateway on loopback: answers `status` and returns the request's head.
    async fn one_request_gateway(
        status: &'static str,
    ) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // The head, then the body its Content-Length announces.
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let length: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map(|v| v.trim().parse().unwrap())
                        .unwrap_or(0);
                    if request.len() >= head_end + 4 + length || n == 0 {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let body = "bad credentials";
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).await.unwrap();
            let text = String::from_utf8_lossy(&request).into_owned();
            text.split("\r\n\r\n")
                .next()
                .unwrap_or_default()
                .to_string()
        });
        (addr, served)
    }

    #[test]
    fn credentials_leave_the_url_for_a_basic_authorization_header() {
        assert_eq!(
            split_credentials("http://gw:9091/metrics/job/j"),
            ("http://gw:9091/metrics/job/j".to_string(), None)
        );
        let (url, header) = split_credentials("https://ferry:p%40ss@gw:9091/metrics/job/j");
        assert_eq!(url, "https://gw:9091/metrics/job/j");
        // base64("ferry:p@ss")
        assert_eq!(header.as_deref(), Some("Basic ZmVycnk6cEBzcw=="));
        let err = grouping_url("gw://u:hunter2@gw:9091", "j", "i")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gw://u:***@gw:9091") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_push_with_credentials_authenticates_and_never_logs_or_reports_them() {
        let capture = ferry_shared::telemetry::capture();
        let progress = Arc::new(Progress::default());
        // Pushed, with the credentials in the header only; the log line masks them.
        let (addr, served) = one_request_gateway("200 OK").await;
        let settings = MetricsSettings {
            pushgateway_url: Some(format!("http://ferry:hunter2@{addr}")),
            job: Some("ferry-worker".into()),
            instance: Some("pod-1".into()),
            ..MetricsSettings::default()
        };
        let exporter = Exporter::start(&settings, progress.clone(), "ferry-worker", "ferry")
            .await
            .unwrap();
        exporter.finish().await;
        let head = served.await.unwrap();
        assert!(
            head.starts_with("PUT /metrics/job/ferry-worker/instance/pod-1 HTTP/1.1"),
            "{head}"
        );
        // base64("ferry:hunter2"), and no userinfo in the request line.
        assert!(
            head.lines().any(|l| l
                .split_once(':')
                .is_some_and(|(name, value)| name.eq_ignore_ascii_case("authorization")
                    && value.trim() == "Basic ZmVycnk6aHVudGVyMg==")),
            "{head}"
        );
        let text = capture.text();
        assert!(text.contains("pushed metrics"), "{text}");
        assert!(
            text.contains(&format!(
                "url=http://ferry:***@{addr}/metrics/job/ferry-worker"
            )),
            "{text}"
        );
        // Refused: the error names the URL, masked.
        let (addr, served) = one_request_gateway("401 Unauthorized").await;
        let metrics = Metrics::new(progress, "ferry-worker");
        let err = push(
            &metrics,
            &format!("http://ferry:hunter2@{addr}/metrics/job/j"),
        )
        .await
        .unwrap_err()
        .to_string();
        served.await.unwrap();
        assert!(
            err.contains(&format!("http://ferry:***@{addr}/metrics/job/j")),
            "{err}"
        );
        assert!(err.contains("401"), "{err}");
        for line in [err.as_str(), text.as_str()] {
            assert!(!line.contains("hunter2"), "{line}");
        }
    }

    #[tokio::test]
    async fn serves_metrics_and_health_over_http() {
        let progress = Arc::new(Progress::default());
        let metrics = Arc::new(Metrics::new(progress.clone(), "ferry-worker"));
        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), metrics)
            .await
            .unwrap();
        progress.chunk_committed(3, 0, [], Duration::ZERO);
        let addr = server.local_addr();
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        };
        let response = get("/metrics").await;
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(
            response.contains("content-type: text/plain; version=0.0.4"),
            "{response}"
        );
        assert!(
            response.contains("\nferry_items_loaded_total 3\n"),
            "{response}"
        );
        assert!(get("/healthz").await.ends_with("\r\n\r\nok\n"));
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
    }
}
