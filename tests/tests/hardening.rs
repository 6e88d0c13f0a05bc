//! Hardening (issue 13) against real servers: TLS with a certificate authority made here, the COPY
//! connection on the ledger connection's server, hostile data files within bounded memory and
//! time, and a loader whose connection stops answering mid-COPY.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_coordinator::plan::{plan, PlanRequest};
use ferry_shared::config::{CopyFormat, KeyAttribute, Settings};
use ferry_shared::queue::{Delivery, ShardTask, WorkQueue};
use ferry_tests::gen::{add_data_file, generate_export, rewrite_manifest};
use ferry_tests::harness::{
    binary, connect, gen_options, migrate_path, query_i64, small_chunks, stderr_of,
};
use ferry_tests::pg::{shared_cluster, PgCluster, PgOptions};
use ferry_worker::pool::{run_pool, PoolSettings, RunContexts};
use ferry_worker::sink::LoadContext;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A certificate authority and a server certificate for `localhost` and 127.0.0.1 it signed.
struct TestPki {
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
}

fn make_pki(name: &str) -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, name);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    TestPki {
        ca_pem: ca_cert.pem(),
        server_cert_pem: server.pem(),
        server_key_pem: server_key.serialize_pem(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn error_of(url: &str) -> String {
    match ferry_worker::conn::control(url).await {
        Ok(_) => panic!("connected to {url}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn tls_verify_full_loads_and_a_wrong_host_name_is_refused() -> anyhow::Result<()> {
    let pki = make_pki("ferry test ca");
    let cluster = PgCluster::start_with(&PgOptions {
        tls: Some((pki.server_cert_pem.clone(), pki.server_key_pem.clone())),
        // TCP connections must be encrypted: every load below went through TLS.
        hba: Some(
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n"
                .into(),
        ),
        ..PgOptions::default()
    })?;
    let dir = tempfile::tempdir()?;
    let ca = write(dir.path(), "ca.pem", &pki.ca_pem);
    let other_ca = write(dir.path(), "other.pem", &make_pki("another ca").ca_pem);
    let port = cluster.port();

    // verify-full against the name on the certificate: connects, encrypted.
    let url = format!(
        "postgres://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"
    );
    let client = connect(&url).await?;
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await?
        .get(0);
    assert!(ssl);
    drop(client);

    // A host name the certificate does not carry: refused, saying so.
    let err = error_of(&format!(
        "host=wrong.example hostaddr=127.0.0.1 port={port} user=postgres dbname=postgres \
         sslmode=verify-full sslrootcert={ca}"
    ))
    .await;
    assert!(
        err.contains("the server's certificate does not name host \"wrong.example\""),
        "{err}"
    );
    assert!(err.contains("sslmode=verify-full"), "{err}");
    // verify-ca checks the chain, not the name: the same connection succeeds.
    connect(&format!(
        "host=wrong.example hostaddr=127.0.0.1 port={port} user=postgres dbname=postgres \
         sslmode=verify-ca sslrootcert={ca}"
    ))
    .await?;
    // Another authority: refused by both.
    for mode in ["verify-ca", "verify-full"] {
        let err = error_of(&format!(
            "postgres://postgres@localhost:{port}/postgres?sslmode={mode}&sslrootcert={other_ca}"
        ))
        .await;
        assert!(
            err.contains("not signed by a certificate authority"),
            "{err}"
        );
    }
    // verify-full without an authority: a clear configuration error.
    let err = error_of(&format!(
        "postgres://postgres@localhost:{port}/postgres?sslmode=verify-full"
    ))
    .await;
    assert!(
        err.contains("sslmode=verify-full needs the certificate authority"),
        "{err}"
    );
    // No TLS: this server's pg_hba.conf refuses it.
    let err = error_of(&format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"
    ))
    .await;
    assert!(
        err.contains("no encryption") || err.contains("pg_hba.conf"),
        "{err}"
    );
    // require against a server without TLS (the shared cluster): refused.
    let err = error_of(&format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=require",
        shared_cluster().port()
    ))
    .await;
    assert!(err.to_lowercase().contains("tls"), "{err}");

    // A whole migration over verify-full, both load paths: the ledger connection and the
    // simple-protocol COPY connection (CSV) alike.
    for (format, db) in [
        (CopyFormat::Binary, "tls_binary"),
        (CopyFormat::Csv, "tls_csv"),
    ] {
        let admin = connect(&url).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await?;
        let export = tempfile::tempdir()?;
        let generated = generate_export(export.path(), &gen_options(5, 400, 2))?;
        let mut settings = small_chunks(150);
        settings.load.copy_format = format;
        let db_url = format!(
            "postgres://postgres@localhost:{port}/{db}?sslmode=verify-full&sslrootcert={ca}"
        );
        let report = migrate_path(&db_url, export.path(), settings, false, None).await?;
        assert!(report.verified(), "{format:?}: {}", report.reason());
        assert_eq!(report.rows_loaded, generated.total_items, "{format:?}");
    }
    Ok(())
}

#[tokio::test]
async fn the_copy_connection_reaches_the_ledger_connections_server() -> anyhow::Result<()> {
    // A Unix socket only: the COPY connection used to fall back to 127.0.0.1.
    let cluster = PgCluster::start_with(&PgOptions {
        unix_only: true,
        ..PgOptions::default()
    })?;
    connect(&cluster.socket_url("postgres"))
        .await?
        .batch_execute("CREATE DATABASE via_socket")
        .await?;
    // Two hosts, the first one dead: the COPY connection used to take the first.
    let shared = shared_cluster();
    let dead = ferry_tests::pg::free_port()?;
    let multi_db = shared.create_database("multi host").await?;
    let multi_db = multi_db.rsplit('/').next().unwrap().to_string();
    let targets = [
        cluster.socket_url("via_socket"),
        format!(
            "host=127.0.0.1,127.0.0.1 port={dead},{} user=postgres dbname={multi_db}",
            shared.port()
        ),
    ];
    for url in targets {
        let export = tempfile::tempdir()?;
        let generated = generate_export(export.path(), &gen_options(9, 300, 2))?;
        let mut settings = small_chunks(100);
        settings.load.copy_format = CopyFormat::Csv;
        let report = migrate_path(&url, export.path(), settings, false, None).await?;
        assert!(report.verified(), "{url}: {}", report.reason());
        assert_eq!(report.rows_loaded, generated.total_items, "{url}");
    }
    Ok(())
}

/// Runs `cmd` to its end and returns its output with its peak resident memory in bytes.
fn run_measured(mut cmd: std::process::Command) -> (std::process::Output, u64) {
    use std::os::unix::process::ExitStatusExt;
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let stdout = tempfile::NamedTempFile::new().unwrap();
    // Reaped by wait4 below, which also reports the child's peak memory.
    #[allow(clippy::zombie_processes)]
    let child = cmd
        .stdout(stdout.reopen().unwrap())
        .stderr(stderr.reopen().unwrap())
        .spawn()
        .unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t);
    let output = std::process::Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout: std::fs::read(stdout.path()).unwrap(),
        stderr: std::fs::read(stderr.path()).unwrap(),
    };
    (output, usage.ru_maxrss as u64 * 1024)
}

#[tokio::test]
async fn a_gzip_bomb_line_is_refused_in_bounded_memory() -> anyhow::Result<()> {
    use std::io::Write;
    let dir = tempfile::tempdir()?;
    let mut export = generate_export(dir.path(), &gen_options(3, 0, 1))?;
    // One line of 1 GiB in about 1 MB: 1024 gzip members of 1 MiB of 'a' each.
    let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    member.write_all(&vec![b'a'; 1 << 20])?;
    let member = member.finish()?;
    let bomb: Vec<u8> = member.repeat(1024);
    assert!(bomb.len() < 2 << 20, "{} bytes", bomb.len());
    std::fs::write(&export.data_files[0].path, &bomb)?;
    export.data_files[0].item_count = 1;
    export.total_items = 1;
    rewrite_manifest(&export)?;
    let url = shared_cluster().create_database("gzip bomb").await?;
    let mut cmd = std::process::Command::new(binary("ferry-coordinator"));
    cmd.args(["migrate", "--export"])
        .arg(dir.path())
        .args(["--target", &url, "--key", "PK,SK"])
        .env_remove("FERRY_FAILPOINTS");
    let started = Instant::now();
    let (output, peak) = run_measured(cmd);
    let stderr = stderr_of(&output);
    eprintln!(
        "gzip bomb: peak RSS {} MiB in {:.1} s",
        peak >> 20,
        started.elapsed().as_secs_f64()
    );
    eprintln!("STDERR-DUMP\n{stderr}\nEND");
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("is longer than 16777216 bytes")
            || stderr.contains("is longer than 16777216 bytes"),
        "{stderr}"
    );
    assert!(peak < 256 << 20, "peak RSS {} MiB", peak >> 20);
    let failed = query_i64(
        &url,
        "SELECT count(*) FROM ferry.shards WHERE state = 'failed' AND error LIKE '%longer than 16777216 bytes%'",
    )
    .await?;
    assert_eq!(failed, 1);
    Ok(())
}

#[tokio::test]
async fn hostile_lines_become_rejects_with_their_reasons_in_bounded_time() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut export = generate_export(dir.path(), &gen_options(4, 20, 1))?;
    let key = |pk: &str| format!(r#""PK":{{"S":"{pk}"}},"SK":{{"S":"x"}}"#);
    let many: String = (0..5000)
        .map(|i| format!(r#","a{i}":{{"N":"{i}"}}"#))
        .collect();
    let deep = format!(
        r#"{}{{"S":"bottom"}}{}"#,
        r#"{"M":{"d":"#.repeat(40),
        "}}".repeat(40)
    );
    let lines = vec![
        format!(
            r#"{{"Item":{{{},"big":{{"N":"{}"}}}}}}"#,
            key("digits"),
            "9".repeat(50_000)
        ),
        format!(
            r#"{{"Item":{{{},"big":{{"N":"1.{}"}}}}}}"#,
            key("zeros"),
            "0".repeat(50_000)
        ),
        format!(r#"{{"Item":{{{},"deep":{deep}}}}}"#, key("deep")),
        format!(r#"{{"Item":{{{}{many}}}}}"#, key("wide")),
    ];
    add_data_file(&mut export, &lines)?;
    let url = shared_cluster().create_database("hostile lines").await?;
    let mut settings = Settings::default();
    settings.load.max_rejects = 10;
    let started = Instant::now();
    let report = migrate_path(&url, dir.path(), settings, false, Some("hostile")).await?;
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(report.verified(), "{}", report.reason());
    assert_eq!((report.rows_loaded, report.rows_rejected), (21, 3));
    let client = connect(&url).await?;
    let rows = client
        .query(
            "SELECT convert_from(raw_line, 'UTF8'), reason FROM ferry.rejects ORDER BY line_no",
            &[],
        )
        .await?;
    let reasons: Vec<String> = rows.iter().map(|r| r.get(1)).collect();
    assert!(
        reasons[0].contains("is 50000 characters long"),
        "{}",
        reasons[0]
    );
    assert!(
        reasons[1].contains("is 50002 characters long"),
        "{}",
        reasons[1]
    );
    assert!(
        reasons[2].contains("nested deeper than 32 levels"),
        "{}",
        reasons[2]
    );
    assert!(reasons.iter().all(|r| r.len() < 400), "{reasons:?}");
    let wide: String = client
        .query_one(
            "SELECT attrs->>'a4999' FROM hostile WHERE \"PK\" = 'wide'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(wide, "4999");
    Ok(())
}

/// A TCP proxy that forwards until `stall` is set, then holds every connection open without
/// moving a byte (a half-open network path), new ones included.
struct StallingProxy {
    port: u16,
    stall: Arc<AtomicBool>,
    forwarded: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl StallingProxy {
    async fn start(upstream: u16, stall_after: u64) -> StallingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stall = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicU64::new(0));
        let (stall2, forwarded2) = (stall.clone(), forwarded.clone());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if stall2.load(Ordering::SeqCst) {
                    held.push(client);
                    continue;
                }
                let server = tokio::net::TcpStream::connect(("127.0.0.1", upstream))
                    .await
                    .unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let (s1, f1) = (stall2.clone(), forwarded2.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let Ok(n) = cr.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        if f1.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > stall_after {
                            s1.store(true, Ordering::SeqCst);
                        }
                        while s1.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                let s2 = stall2.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let Ok(n) = sr.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        while s2.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        StallingProxy {
            port,
            stall,
            forwarded,
            task,
        }
    }
}

/// A queue of the test's own: records every renewal and how each delivery was settled.
struct WatchedQueue {
    tasks: Mutex<VecDeque<ShardTask>>,
    extends: Mutex<Vec<Instant>>,
    settled: Mutex<Vec<&'static str>>,
}

#[async_trait::async_trait]
impl WorkQueue for WatchedQueue {
    async fn receive(&self, _max: usize) -> ferry_shared::Result<Vec<Delivery>> {
        Ok(self
            .tasks
            .lock()
            .unwrap()
            .pop_front()
            .map(|task| Delivery {
                task,
                receipt: String::new(),
                receive_count: 1,
            })
            .into_iter()
            .collect())
    }
    async fn extend(&self, _delivery: &Delivery) -> ferry_shared::Result<()> {
        self.extends.lock().unwrap().push(Instant::now());
        Ok(())
    }
    async fn acknowledge(&self, _delivery: &Delivery) -> ferry_shared::Result<()> {
        self.settled.lock().unwrap().push("acknowledge");
        Ok(())
    }
    async fn release(&self, _delivery: &Delivery, _delay: Duration) -> ferry_shared::Result<()> {
        self.settled.lock().unwrap().push("release");
        Ok(())
    }
    async fn fail(&self, _delivery: &Delivery) -> ferry_shared::Result<()> {
        self.settled.lock().unwrap().push("fail");
        Ok(())
    }
    fn heartbeat(&self) -> Option<Duration> {
        Some(Duration::from_millis(200))
    }
}

#[tokio::test]
async fn a_connection_that_stops_answering_mid_copy_lets_the_shard_go() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let generated = generate_export(dir.path(), &gen_options(12, 40_000, 1))?;
    let url = shared_cluster().create_database("stalled copy").await?;
    let mut client = connect(&url).await?;
    let settings = small_chunks(100_000);
    let planned = plan(
        &mut client,
        &PlanRequest {
            export: dir.path().display().to_string(),
            keys: KeyAttribute::parse_list("PK,SK")?,
            table: None,
            append: false,
            run_id: None,
            settings: settings.clone(),
        },
    )
    .await?;
    let shard = ferry_ledger::runs::get_shards(&client, &planned.run.run_id)
        .await?
        .into_iter()
        .max_by_key(|s| s.item_count)
        .unwrap()
        .shard_id;
    // The loader's queries pass; the COPY stalls after its first 256 KiB.
    let proxy = StallingProxy::start(shared_cluster().port(), 256 * 1024).await;
    let db = url.rsplit('/').next().unwrap();
    let proxied = format!(
        "postgres://postgres@127.0.0.1:{}/{db}?connect_timeout=2",
        proxy.port
    );
    let ctx = LoadContext::new(
        planned.run.clone(),
        planned.store.clone(),
        &settings.load,
        planned.target.clone(),
        &proxied,
    )?;
    let queue = Arc::new(WatchedQueue {
        tasks: Mutex::new(VecDeque::from([ShardTask::new(
            &planned.run.run_id,
            &shard,
        )])),
        extends: Mutex::new(Vec::new()),
        settled: Mutex::new(Vec::new()),
    });
    let pool = PoolSettings {
        progress_timeout: Some(Duration::from_secs(2)),
        ..PoolSettings::in_process(&proxied, 1, 2)
    };
    let started = Instant::now();
    let errors = tokio::time::timeout(
        Duration::from_secs(90),
        run_pool(Arc::new(RunContexts::single(ctx)), queue.clone(), pool),
    )
    .await
    .expect("the loader must give up on a connection that stopped answering");
    eprintln!(
        "errors {errors:?} settled {:?} forwarded {}",
        queue.settled.lock().unwrap(),
        proxy.forwarded.load(Ordering::SeqCst)
    );
    assert!(
        proxy.stall.load(Ordering::SeqCst),
        "the proxy stalled mid-COPY"
    );
    assert!(proxy.forwarded.load(Ordering::SeqCst) > 256 * 1024);
    let text = format!("{errors:?}");
    assert!(!errors.is_empty());
    assert!(
        text.contains("no progress on the target connection") || text.contains("connect_timeout"),
        "{text}"
    );
    assert_eq!(
        *queue.settled.lock().unwrap(),
        vec!["release"],
        "given back, not acknowledged"
    );
    // The heartbeat stopped within the progress timeout (and a period) of the stall, long before
    // the loader finished giving up.
    let extends = queue.extends.lock().unwrap().clone();
    let last = extends.last().copied().unwrap_or(started);
    let finished = started.elapsed();
    assert!(
        last.duration_since(started) + Duration::from_secs(2) < finished,
        "renewals went on until {:?} of {finished:?}",
        last.duration_since(started)
    );
    // Nothing of the stalled chunk committed; once the path is gone, the shard loads once.
    proxy.task.abort();
    drop(proxy);
    let stalled = ferry_ledger::Ledger::shard(&client, &planned.run.run_id, &shard)
        .await?
        .unwrap();
    assert_eq!(
        (stalled.committed_lines, stalled.state.as_str()),
        (0, "pending")
    );
    let report = migrate_path(&url, dir.path(), settings, false, None).await?;
    assert!(report.verified(), "{}", report.reason());
    assert_eq!(report.rows_loaded, generated.total_items);
    assert_eq!(
        query_i64(&url, "SELECT count(*) FROM \"AppTable\"").await? as u64,
        generated.total_items
    );
    // The table's key, built after the load, did not wait for the stalled loader's session
    // (still open on the server, its chunk never to commit): finalize ended it.
    assert_eq!(
        query_i64(
            &url,
            "SELECT count(*) FROM pg_constraint WHERE conrelid = '\"AppTable\"'::regclass AND contype = 'p'"
        )
        .await?,
        1
    );
    Ok(())
}

/// Runs a Ferry binary with `env` (and no inherited password settings).
fn run_ferry(name: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(binary(name));
    cmd.args(args);
    for var in [
        "FERRY_FAILPOINTS",
        "PGPASSWORD",
        "PGPASSFILE",
        "FERRY_TARGET__PASSWORD_FILE",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn all_output(output: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn passwords_and_loaded_values_stay_out_of_logs_outputs_and_errors() -> anyhow::Result<()> {
    let password = "pw-Zq7-never-shown";
    let cluster = PgCluster::start_with(&PgOptions {
        hba: Some(
            "local all all trust\nhost all ferry 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 trust\n"
                .into(),
        ),
        ..PgOptions::default()
    })?;
    let admin = connect(&cluster.socket_url("postgres")).await?;
    admin
        .batch_execute(&format!(
            "CREATE ROLE ferry LOGIN SUPERUSER PASSWORD '{password}'"
        ))
        .await?;
    for db in ["secrets_raw", "secrets_redacted", "secrets_omitted"] {
        admin
            .batch_execute(&format!("CREATE DATABASE {db} OWNER ferry"))
            .await?;
    }
    let dir = tempfile::tempdir()?;
    let mut export = generate_export(dir.path(), &gen_options(21, 50, 1))?;
    // Eleven rejects: the report shows the first ten, so the last one's reason (PARAMMARK) is
    // only ever in the statement that records it, as a bound parameter.
    let mut lines = vec![
        r#"{"Item":{"PK":{"S":"KEYMARK-7f3a"},"SK":{"S":"1"},"email":{"S":"VALUEMARK-c0de@example.com"}}}"#.to_string(),
        r#"{"Item":{"PK":{"S":"REJECTMARK-91b2"},"SK":{"S":"1"},"n":{"N":"REJECTMARK-not-a-number"}}}"#.to_string(),
    ];
    lines.extend((0..9).map(|i| format!("not json {i}")));
    lines.push(r#"{"Item":{"PK":{"S":"x"},"SK":{"S":"1"},"n":{"N":"PARAMMARK-e1"}}}"#.to_string());
    add_data_file(&mut export, &lines)?;
    let export_dir = dir.path().display().to_string();
    let port = cluster.port();
    let url = |db: &str| format!("postgres://ferry@127.0.0.1:{port}/{db}");
    // The rejected line's key is only ever in bound parameters; its reason (naming the bad value)
    // is in the report unless reject lines are redacted.
    let secrets = [
        password,
        "KEYMARK",
        "VALUEMARK",
        "REJECTMARK-91b2",
        "PARAMMARK",
    ];
    let check = |what: &str, output: &std::process::Output| {
        let text = all_output(output);
        for secret in secrets {
            assert!(!text.contains(secret), "{what} shows {secret}:\n{text}");
        }
    };
    // The password from PGPASSWORD, every log at debug: loads, and nothing secret is printed.
    let migrate = |db: &str, extra: &[(&'static str, &'static str)]| {
        let mut env = vec![
            ("FERRY_LOG", "debug"),
            ("PGPASSWORD", password),
            ("FERRY_LOAD__MAX_REJECTS", "20"),
        ];
        env.extend_from_slice(extra);
        run_ferry(
            "ferry-coordinator",
            &[
                "migrate",
                "--export",
                &export_dir,
                "--target",
                &url(db),
                "--key",
                "PK,SK",
            ],
            &env,
        )
    };
    let output = migrate("secrets_raw", &[]);
    assert_eq!(output.status.code(), Some(0), "{}", all_output(&output));
    assert!(
        all_output(&output).contains("DEBUG"),
        "debug logging was on"
    );
    check("migrate", &output);
    let run_id: String = connect(&cluster.socket_url("secrets_raw"))
        .await?
        .query_one("SELECT run_id FROM ferry.runs", &[])
        .await?
        .get(0);
    // The password from target.password_file, then from a password file only its owner reads.
    let password_file = write(dir.path(), "password", &format!("{password}\n"));
    let status = |env: &[(&str, &str)]| {
        run_ferry(
            "ferry-coordinator",
            &[
                "status",
                "--target",
                &url("secrets_raw"),
                "--run-id",
                &run_id,
                "--json",
            ],
            env,
        )
    };
    let output = status(&[
        ("FERRY_TARGET__PASSWORD_FILE", &password_file),
        ("FERRY_LOG", "debug"),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", all_output(&output));
    check("status", &output);
    let pgpass = write(
        dir.path(),
        "pgpass",
        &format!("127.0.0.1:{port}:*:ferry:{password}\n"),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600))?;
    let output = status(&[("PGPASSFILE", &pgpass)]);
    assert_eq!(output.status.code(), Some(0), "{}", all_output(&output));
    check("status", &output);
    // A password file others can read is ignored (as libpq does), and says so.
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644))?;
    let output = status(&[("PGPASSFILE", &pgpass)]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        all_output(&output).contains("readable by others"),
        "{}",
        all_output(&output)
    );
    check("status", &output);
    // A wrong password in the URL: the error names the server, not the password.
    let output = run_ferry(
        "ferry-coordinator",
        &[
            "status",
            "--target",
            &format!("postgres://ferry:{password}-wrong@127.0.0.1:{port}/secrets_raw"),
            "--run-id",
            &run_id,
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    let text = all_output(&output);
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("password authentication failed"), "{text}");
    check("a failed connection", &output);
    // The ledger keeps the rejected line as read by default; redacted or omitted on request.
    let kept = |db: &'static str| {
        let url = cluster.socket_url(db);
        async move {
            let row = connect(&url)
                .await?
                .query_one(
                    "SELECT convert_from(raw_line, 'UTF8'), reason FROM ferry.rejects \
                     WHERE line_no = 2 AND reason LIKE '%\"n\"%'",
                    &[],
                )
                .await?;
            anyhow::Ok((row.get::<_, String>(0), row.get::<_, String>(1)))
        }
    };
    let (raw, reason) = kept("secrets_raw").await?;
    assert!(raw.contains("REJECTMARK-91b2") && reason.contains("REJECTMARK-not-a-number"));
    let output = migrate(
        "secrets_redacted",
        &[("FERRY_LOAD__REJECT_LINES", "redacted")],
    );
    assert_eq!(output.status.code(), Some(0), "{}", all_output(&output));
    check("migrate", &output);
    assert!(
        !all_output(&output).contains("REJECTMARK"),
        "{}",
        all_output(&output)
    );
    let (raw, reason) = kept("secrets_redacted").await?;
    assert_eq!(
        raw,
        r#"{"Item":{"PK":{"S":"…"},"SK":{"S":"…"},"n":{"N":"…"}}}"#
    );
    assert!(
        reason.starts_with("invalid_value: attribute \"n\""),
        "{reason}"
    );
    assert!(!reason.contains("REJECTMARK"), "{reason}");
    let output = migrate(
        "secrets_omitted",
        &[("FERRY_LOAD__REJECT_LINES", "omitted")],
    );
    assert_eq!(output.status.code(), Some(0), "{}", all_output(&output));
    let (raw, reason) = kept("secrets_omitted").await?;
    assert_eq!(raw, "");
    assert!(!reason.contains("REJECTMARK"), "{reason}");
    Ok(())
}

/// `heliosdb-nano` processes serving `data_dir`: their ids and command lines.
fn servers_on(data_dir: &Path) -> Vec<(u32, String)> {
    let wanted = data_dir.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let words: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        if words.iter().any(|w| w.ends_with("heliosdb-nano")) && words.contains(&wanted) {
            found.push((pid, words.join(" ")));
        }
    }
    found
}

#[tokio::test]
async fn the_embedded_heliosdb_has_a_password_one_owner_and_stops_on_sigterm() -> anyhow::Result<()>
{
    ferry_tests::helios::heliosdb_binary()?;
    let dir = tempfile::tempdir()?;
    let export_dir = dir.path().join("export");
    let generated = generate_export(&export_dir, &gen_options(31, 3000, 2))?;
    let data = dir.path().join("data");
    std::fs::create_dir(&data)?;
    let data = std::fs::canonicalize(&data)?;
    let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
    let migrate = |slow: bool, name: &str| {
        let mut cmd = std::process::Command::new(binary("ferry-coordinator"));
        cmd.args(["migrate", "--export"])
            .arg(&export_dir)
            .args(["--key", "PK,SK"])
            .env("FERRY_TARGET__DATA_DIR", &data)
            .env("FERRY_LOAD__CHUNK_LINES", "200")
            .env_remove("FERRY_TARGET__URL")
            .env_remove("FERRY_FAILPOINTS")
            .stdout(log(&format!("{name}.out")))
            .stderr(log(&format!("{name}.err")));
        if slow {
            // Every commit waits: the load is still running when the signal comes.
            cmd.env("FERRY_FAILPOINTS", "after_commit=sleep1000@1+");
        }
        cmd
    };
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    let mut first = migrate(true, "first").spawn()?;
    let started = Instant::now();
    let (server_pid, command) = loop {
        if let Some(found) = servers_on(&data).into_iter().next() {
            break found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}",
            read("first.err")
        );
        assert!(first.try_wait()?.is_none(), "{}", read("first.err"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(command.contains("--auth scram-sha-256"), "{command}");
    assert!(!command.contains("trust"), "{command}");
    let port: u16 = command
        .split(' ')
        .skip_while(|w| *w != "--port")
        .nth(1)
        .unwrap()
        .parse()?;
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let password_file = data.join("ferry-password");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&password_file)?.permissions().mode() & 0o777,
        0o600
    );
    let with = ferry_worker::conn::ConnectOptions {
        password_file: Some(password_file.clone()),
        ..ferry_worker::conn::ConnectOptions::default()
    };
    loop {
        if let Ok((client, _)) =
            ferry_worker::conn::connect_with(&url, ferry_worker::conn::Purpose::Control, &with)
                .await
        {
            let rows = client
                .simple_query("SELECT count(*) FROM ferry.shards WHERE committed_lines > 0")
                .await;
            let loading = rows.ok().into_iter().flatten().any(|m| {
                matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0).is_some_and(|n| n != "0"))
            });
            if loading {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{}",
            read("first.err")
        );
        assert!(first.try_wait()?.is_none(), "{}", read("first.err"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The server answers; without the password it refuses.
    let without = ferry_worker::conn::ConnectOptions::default();
    let refused =
        ferry_worker::conn::connect_with(&url, ferry_worker::conn::Purpose::Control, &without)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
    assert!(refused.contains("password"), "{refused}");
    // A second start on the same folder: refused, naming the process that holds it.
    let second = migrate(false, "second").status()?;
    assert_eq!(second.code(), Some(2), "{}", read("second.err"));
    assert!(
        read("second.err").contains(&format!("is in use by process {}", first.id())),
        "{}",
        read("second.err")
    );
    // SIGTERM mid-load: migrate stops, and its server with it.
    unsafe {
        libc::kill(first.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = loop {
        if let Some(status) = first.try_wait()? {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "migrate ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(1), "{}", read("first.err"));
    assert!(
        read("first.err").contains("stopped by SIGTERM"),
        "{}",
        read("first.err")
    );
    assert!(servers_on(&data).is_empty(), "heliosdb-nano still runs");
    assert!(unsafe { libc::kill(server_pid as libc::pid_t, 0) } != 0);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    // The same command resumes and finishes, with the same password, and stops its server.
    let last = migrate(false, "last").status()?;
    assert_eq!(last.code(), Some(0), "{}", read("last.err"));
    assert!(read("last.err").contains("--auth scram-sha-256 --password-file"));
    assert!(
        read("last.out").contains(&format!("{} rows loaded", generated.total_items))
            || read("last.out").contains("verified"),
        "{}",
        read("last.out")
    );
    assert!(servers_on(&data).is_empty());
    Ok(())
}

#[tokio::test]
async fn a_message_for_another_target_is_never_loaded() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let generated = generate_export(dir.path(), &gen_options(41, 500, 1))?;
    let url = shared_cluster().create_database("other target").await?;
    let mut client = connect(&url).await?;
    let settings = small_chunks(200);
    let planned = plan(
        &mut client,
        &PlanRequest {
            export: dir.path().display().to_string(),
            keys: KeyAttribute::parse_list("PK,SK")?,
            table: None,
            append: false,
            run_id: None,
            settings: settings.clone(),
        },
    )
    .await?;
    let run_id = planned.run.run_id.clone();
    let token = ferry_ledger::runs::run_token(&client, &run_id)
        .await?
        .expect("plan made the run's token");
    assert_eq!(token.len(), 32);
    let shards = ferry_ledger::runs::get_shards(&client, &run_id).await?;
    let shard = shards
        .iter()
        .max_by_key(|s| s.item_count)
        .unwrap()
        .shard_id
        .clone();
    let task = ShardTask::new(&run_id, &shard);
    // Another environment's message (same run id, its own token), one for a run this ledger
    // never planned, then this target's own.
    let queue = Arc::new(WatchedQueue {
        tasks: Mutex::new(VecDeque::from([
            task.clone().for_target("0123456789abcdef0123456789abcdef"),
            ShardTask::new("elsewhere-run", &shard).for_target(&token),
            task.clone().for_target(&token),
        ])),
        extends: Mutex::new(Vec::new()),
        settled: Mutex::new(Vec::new()),
    });
    let ctx = LoadContext::new(
        planned.run.clone(),
        planned.store.clone(),
        &settings.load,
        planned.target.clone(),
        &url,
    )?;
    let errors = run_pool(
        Arc::new(RunContexts::single(ctx)),
        queue.clone(),
        PoolSettings::in_process(&url, 1, 2),
    )
    .await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        *queue.settled.lock().unwrap(),
        vec!["release", "release", "acknowledge"]
    );
    let loaded = ferry_ledger::Ledger::shard(&client, &run_id, &shard)
        .await?
        .unwrap();
    assert_eq!(loaded.state, "done");
    let items = shards.iter().filter_map(|s| s.item_count).sum::<u64>();
    assert_eq!(items, generated.total_items);
    assert_eq!(
        query_i64(&url, "SELECT count(*) FROM \"AppTable\"").await? as u64,
        loaded.item_count.unwrap()
    );
    Ok(())
}

#[tokio::test]
async fn errors_a_user_can_act_on() -> anyhow::Result<()> {
    // A key that is only the partition key: refused before loading, with the key that works.
    let dir = tempfile::tempdir()?;
    let mut export = generate_export(dir.path(), &gen_options(51, 0, 1))?;
    let lines: Vec<String> = (0..40)
        .map(|i| {
            format!(
                r#"{{"Item":{{"pk":{{"S":"USER#{}"}},"sk":{{"S":"ORDER#{i}"}},"total":{{"N":"{i}.5"}}}}}}"#,
                i % 10
            )
        })
        .collect();
    add_data_file(&mut export, &lines)?;
    let url = shared_cluster()
        .create_database("partition key only")
        .await?;
    let export_dir = dir.path().display().to_string();
    let output = run_ferry(
        "ferry-coordinator",
        &[
            "migrate",
            "--export",
            &export_dir,
            "--target",
            &url,
            "--key",
            "pk",
        ],
        &[],
    );
    let text = all_output(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(
        text.contains("the key (pk) is not unique: 30 of 40 sampled items repeat another's pk"),
        "{text}"
    );
    assert!(text.contains("Pass --key pk,sk"), "{text}");
    assert_eq!(
        query_i64(
            &url,
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        .await?,
        0,
        "nothing was created or loaded"
    );
    let output = run_ferry(
        "ferry-coordinator",
        &[
            "migrate",
            "--export",
            &export_dir,
            "--target",
            &url,
            "--key",
            "pk,sk",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{}", all_output(&output));

    // A cause is printed once, not once per wrapper.
    let output = run_ferry(
        "ferry-coordinator",
        &[
            "migrate",
            "--export",
            "/nonexistent/export",
            "--target",
            &url,
            "--key",
            "pk",
        ],
        &[],
    );
    let text = all_output(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert_eq!(
        text.matches("No such file or directory").count(),
        1,
        "{text}"
    );
    let output = run_ferry(
        "ferry-coordinator",
        &[
            "status",
            "--target",
            "postgres://postgres@127.0.0.1:1/db",
            "--run-id",
            "r",
        ],
        &[],
    );
    let text = all_output(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(
        text.contains("cannot connect to the target at 127.0.0.1:1"),
        "{text}"
    );
    assert_eq!(text.matches("Connection refused").count(), 1, "{text}");

    // --help names both targets.
    let help = all_output(&run_ferry("ferry-coordinator", &["--help"], &[]));
    assert!(
        help.contains("into HeliosDB") && help.contains("PostgreSQL"),
        "{help}"
    );
    Ok(())
}

#[tokio::test]
async fn a_panic_while_decoding_fails_the_shard_not_the_process() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let generated = generate_export(dir.path(), &gen_options(61, 300, 1))?;
    let url = shared_cluster().create_database("decode panic").await?;
    let export_dir = dir.path().display().to_string();
    let output = run_ferry(
        "ferry-coordinator",
        &[
            "plan",
            "--export",
            &export_dir,
            "--target",
            &url,
            "--key",
            "PK,SK",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{}", all_output(&output));
    let run_id = String::from_utf8(output.stdout)?.trim().to_string();
    let worker = |env: &[(&str, &str)]| {
        run_ferry(
            "ferry-worker",
            &["--target", &url, "--run-id", &run_id, "--workers", "1"],
            env,
        )
    };
    // Every line from the fifth on panics while it is decoded (on a rayon thread).
    let output = worker(&[
        ("FERRY_FAILPOINTS", "decode_line=panic@5+"),
        ("FERRY_LOAD__CONNECT_ATTEMPTS", "2"),
    ]);
    let text = all_output(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "exit 1, not an abort: {text}"
    );
    assert!(
        text.contains("panicked: failpoint decode_line fired"),
        "{text}"
    );
    assert_eq!(
        query_i64(&url, "SELECT count(*) FROM \"AppTable\"").await?,
        0
    );
    // The same shards, without the fault: loaded once.
    let output = worker(&[]);
    assert_eq!(output.status.code(), Some(0), "{}", all_output(&output));
    assert_eq!(
        query_i64(&url, "SELECT count(*) FROM \"AppTable\"").await? as u64,
        generated.total_items
    );
    Ok(())
}
