//! TLS to the target with rustls (on ring, the provider the AWS clients already use), for the
//! tokio-postgres connections and the simple-protocol COPY client alike.
//!
//! The `sslmode` values follow libpq:
//! - `disable`: no TLS;
//! - `prefer` (the default on this machine: loopback, `localhost`): TLS when the server offers
//!   it, else plain;
//! - `require` (the default to any other host, see [`crate::conn::default_sslmode`]): TLS or no
//!   connection;
//! - `verify-ca`: TLS, and the server's certificate must chain to the root certificates;
//! - `verify-full`: as `verify-ca`, and the certificate must name the host connected to.
//!
//! `prefer` and `require` encrypt without checking who answers, unless root certificates are
//! given (`sslrootcert`, or libpq's `~/.postgresql/root.crt`), in which case they check the chain
//! as `verify-ca` does. `sslrootcert=system` uses the operating system's roots. `sslcert` and
//! `sslkey` present a client certificate.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{Result, WorkerError};

/// How a connection uses TLS (libpq's `sslmode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never.
    Disable,
    /// When the server offers it (the default on this machine; see
    /// [`crate::conn::default_sslmode`]).
    #[default]
    Prefer,
    /// Always; the certificate is checked only when root certificates are given.
    Require,
    /// Always, with the certificate chained to the roots.
    VerifyCa,
    /// Always, with the certificate chained to the roots and naming the host.
    VerifyFull,
}

impl SslMode {
    /// Parses a libpq `sslmode` value (`allow` is taken as `prefer`: encrypt when possible).
    pub fn parse(value: &str) -> Result<SslMode> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(WorkerError::TargetConfig(format!(
                "sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
            )))
            }
        })
    }

    /// The libpq name.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether a connection without TLS is refused.
    pub fn requires_tls(self) -> bool {
        !matches!(self, SslMode::Disable | SslMode::Prefer)
    }
}

/// The TLS settings of a target, as given in its URL or the config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// The mode.
    pub mode: SslMode,
    /// Root certificates (a PEM file, or `system`).
    pub root_cert: Option<String>,
    /// A client certificate chain (PEM).
    pub client_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub client_key: Option<PathBuf>,
}

/// A ready TLS client configuration.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<rustls::ClientConfig>,
    mode: SslMode,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("mode", &self.mode)
            .finish()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(what: &str, e: impl std::fmt::Display) -> WorkerError {
    WorkerError::TargetConfig(format!("{what}: {e}"))
}

/// libpq's default root certificate file, when it exists.
fn default_root_file() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let path = Path::new(&home).join(".postgresql/root.crt");
    path.is_file().then_some(path)
}

fn load_roots(root: &str) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    if root == "system" {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            // A system root rustls cannot parse is skipped, as every TLS client does.
            let _ = store.add(cert);
        }
        if store.is_empty() {
            return Err(WorkerError::TargetConfig(
                "sslrootcert=system: no usable root certificates on this system".into(),
            ));
        }
        return Ok(store);
    }
    let certs = CertificateDer::pem_file_iter(root)
        .map_err(|e| tls_error(&format!("cannot read sslrootcert {root}"), e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls_error(&format!("sslrootcert {root} is not PEM"), e))?;
    if certs.is_empty() {
        return Err(WorkerError::TargetConfig(format!(
            "sslrootcert {root} holds no certificate"
        )));
    }
    for cert in certs {
        store
            .add(cert)
            .map_err(|e| tls_error(&format!("sslrootcert {root}"), e))?;
    }
    Ok(store)
}

impl TlsClient {
    /// Builds the client for `settings`; `None` for `sslmode=disable`.
    pub fn new(settings: &TlsSettings) -> Result<Option<TlsClient>> {
        let mode = settings.mode;
        if mode == SslMode::Disable {
            return Ok(None);
        }
        let root = settings
            .root_cert
            .clone()
            .or_else(|| default_root_file().map(|p| p.display().to_string()));
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("tls", e))?;
        let verifier: Arc<dyn ServerCertVerifier> = match (mode, root) {
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
                return Err(WorkerError::TargetConfig(format!(
                    "sslmode={} needs the certificate authority that signed the server's \
                     certificate: set sslrootcert=/path/to/ca.pem (or sslrootcert=system) in the \
                     URL or target.sslrootcert",
                    mode.as_str()
                )))
            }
            (_, None) => Arc::new(EncryptOnly(provider())),
            (_, Some(root)) => {
                let roots = Arc::new(load_roots(&root)?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| tls_error("tls", e))?;
                if mode == SslMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(ChainOnly(webpki))
                }
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&settings.client_cert, &settings.client_key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| tls_error(&format!("sslcert {}", cert.display()), e))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| tls_error(&format!("sslkey {}", key.display()), e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| tls_error("sslcert/sslkey", e))?
            }
            _ => {
                return Err(WorkerError::TargetConfig(
                    "sslcert and sslkey go together".into(),
                ))
            }
        };
        Ok(Some(TlsClient {
            config: Arc::new(config),
            mode,
        }))
    }

    /// The mode this client was built for.
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// Runs the TLS handshake over `stream` for `host` (the name checked by `verify-full`).
    pub async fn handshake<S>(
        &self,
        host: &str,
        stream: S,
    ) -> Result<tokio_rustls::client::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = server_name(host)?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
            .map_err(|e| WorkerError::TargetConfig(describe_handshake_error(&e, host, self.mode)))
    }

    /// A tokio-postgres connector for `host`.
    pub fn connector(&self, host: &str) -> PgTlsConnect {
        PgTlsConnect {
            client: self.clone(),
            host: host.to_string(),
        }
    }
}

fn server_name(host: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(host.to_string())
        .map_err(|_| WorkerError::TargetConfig(format!("{host:?} is not a valid TLS server name")))
}

/// A handshake error in words a user can act on.
pub fn describe_handshake_error(error: &std::io::Error, host: &str, mode: SslMode) -> String {
    let inner = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => format!(
            "TLS: the server's certificate does not name host {host:?} (sslmode={}): {error}; \
             connect with the name the certificate was issued for",
            mode.as_str()
        ),
        Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => format!(
            "TLS: the server's certificate is not signed by a certificate authority in sslrootcert \
             (sslmode={}): {error}",
            mode.as_str()
        ),
        Some(other) => format!("TLS handshake with {host:?} failed: {other}"),
        None => format!("TLS handshake with {host:?} failed: {error}"),
    }
}

/// Checks the chain to the roots but not the name (`verify-ca`, and `require` with roots).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Encrypts without checking the certificate (`prefer` and `require` without roots, as libpq).
/// The handshake signatures are still checked, so the session key belongs to the certificate
/// presented.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// tokio-postgres's side of the handshake.
pub struct PgTlsConnect {
    client: TlsClient,
    host: String,
}

/// A TLS stream as tokio-postgres wants it.
pub struct PgTlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> tokio_postgres::tls::TlsConnect<S> for PgTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type Error = WorkerError;
    type Future = Pin<Box<dyn Future<Output = Result<PgTlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let stream = self.client.handshake(&self.host, stream).await?;
            Ok(PgTlsStream(stream))
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for PgTlsStream<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        // SCRAM without channel binding (the -PLUS variant would need the certificate's signature
        // hash algorithm); the password still never crosses the wire.
        tokio_postgres::tls::ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PgTlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PgTlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
