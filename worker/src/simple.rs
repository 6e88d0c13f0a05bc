//! A minimal PostgreSQL-wire client for `COPY … FROM STDIN` over the *simple* query protocol.
//!
//! tokio-postgres always prepares a COPY statement (extended protocol), which HeliosDB does not
//! accept: it handles COPY only as a simple query. This client speaks just enough of the protocol
//! for that: startup (trust, cleartext, MD5 or SCRAM-SHA-256 authentication), one `Query`, the
//! `CopyInResponse`, `CopyData` frames, `CopyDone` or `CopyFail`, and the result. It works against
//! PostgreSQL too, which is how it is tested without HeliosDB. Messages are encoded and decoded with
//! the `postgres-protocol` crate.

use bytes::{Buf, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{Result, WorkerError};

/// An error the server sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerError {
    /// SQLSTATE.
    pub code: String,
    /// Message.
    pub message: String,
    /// Detail, when given.
    pub detail: Option<String>,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl ServerError {
    /// Whether the error is a unique-key violation (PostgreSQL's 23505, or HeliosDB's COPY text).
    pub fn is_unique_violation(&self) -> bool {
        let text = self.message.to_ascii_lowercase();
        self.code == "23505" || text.contains("duplicate") || text.contains("unique")
    }
}

/// How a COPY ended.
#[derive(Debug)]
pub enum CopyResult {
    /// The server stored this many rows.
    Copied(u64),
    /// The server refused the COPY; nothing was stored.
    Refused(ServerError),
}

fn protocol_error(context: &str, e: impl std::fmt::Display) -> WorkerError {
    WorkerError::Internal(format!("{context}: {e}"))
}

fn server_error(body: &backend::ErrorResponseBody) -> ServerError {
    let mut error = ServerError {
        code: String::new(),
        message: String::new(),
        detail: None,
    };
    let mut fields = body.fields();
    while let Ok(Some(field)) = fields.next() {
        match field.type_() {
            b'C' => error.code = String::from_utf8_lossy(field.value_bytes()).into_owned(),
            b'M' => error.message = String::from_utf8_lossy(field.value_bytes()).into_owned(),
            b'D' => error.detail = Some(String::from_utf8_lossy(field.value_bytes()).into_owned()),
            _ => {}
        }
    }
    error
}

/// A connection that runs COPY over the simple query protocol.
pub struct SimpleCopyClient {
    stream: Box<dyn crate::conn::Io>,
    read_buf: BytesMut,
    write_buf: BytesMut,
    endpoint: crate::conn::Endpoint,
}

impl SimpleCopyClient {
    /// Connects to the target named by `url` the way every Ferry connection does
    /// ([`crate::conn`]: hosts in order, TLS, password, timeouts, keepalive), reaching the server
    /// the loader's ledger connection reached.
    pub async fn connect(url: &str) -> Result<SimpleCopyClient> {
        let session = crate::conn::open_session(url).await?;
        let mut client = SimpleCopyClient {
            stream: session.stream,
            read_buf: BytesMut::with_capacity(8192),
            write_buf: BytesMut::new(),
            endpoint: session.endpoint,
        };
        client
            .startup(
                &session.user,
                &session.database,
                session.password.as_deref(),
            )
            .await?;
        Ok(client)
    }

    /// The server this connection reached.
    pub fn endpoint(&self) -> &crate::conn::Endpoint {
        &self.endpoint
    }

    async fn flush(&mut self) -> Result<()> {
        let buf = self.write_buf.split();
        self.stream
            .write_all(&buf)
            .await
            .map_err(|e| protocol_error("write to the target", e))?;
        self.stream
            .flush()
            .await
            .map_err(|e| protocol_error("write to the target", e))
    }

    async fn read_message(&mut self) -> Result<backend::Message> {
        loop {
            if let Some(message) = backend::Message::parse(&mut self.read_buf)
                .map_err(|e| protocol_error("bad message from the target", e))?
            {
                return Ok(message);
            }
            let n = self
                .stream
                .read_buf(&mut self.read_buf)
                .await
                .map_err(|e| protocol_error("read from the target", e))?;
            if n == 0 {
                return Err(WorkerError::Internal(
                    "the target closed the connection".into(),
                ));
            }
        }
    }

    async fn startup(&mut self, user: &str, database: &str, password: Option<&[u8]>) -> Result<()> {
        let params = [
            ("user", user),
            ("database", database),
            ("client_encoding", "UTF8"),
        ];
        frontend::startup_message(params.iter().copied(), &mut self.write_buf)
            .map_err(|e| protocol_error("startup", e))?;
        self.flush().await?;
        let need_password = || {
            WorkerError::TargetConfig(
                "the target asks for a password and none is given (the URL, \
                 target.password_file, PGPASSWORD or ~/.pgpass)"
                    .into(),
            )
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            match self.read_message().await? {
                backend::Message::AuthenticationOk => {}
                backend::Message::AuthenticationCleartextPassword => {
                    let password = password.ok_or_else(need_password)?;
                    frontend::password_message(password, &mut self.write_buf)
                        .map_err(|e| protocol_error("auth", e))?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationMd5Password(body) => {
                    let password = password.ok_or_else(need_password)?;
                    let hash = postgres_protocol::authentication::md5_hash(
                        user.as_bytes(),
                        password,
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.write_buf)
                        .map_err(|e| protocol_error("auth", e))?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationSasl(body) => {
                    let password = password.ok_or_else(need_password)?;
                    let mut mechanisms = body.mechanisms();
                    let mut supported = false;
                    while let Ok(Some(mechanism)) = mechanisms.next() {
                        supported |= mechanism == SCRAM_SHA_256;
                    }
                    if !supported {
                        return Err(WorkerError::Internal(
                            "the target offers no supported SASL mechanism".into(),
                        ));
                    }
                    let state = ScramSha256::new(password, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        SCRAM_SHA_256,
                        state.message(),
                        &mut self.write_buf,
                    )
                    .map_err(|e| protocol_error("auth", e))?;
                    self.flush().await?;
                    scram = Some(state);
                }
                backend::Message::AuthenticationSaslContinue(body) => {
                    let state = scram
                        .as_mut()
                        .ok_or_else(|| protocol_error("auth", "unexpected SASL continue"))?;
                    state
                        .update(body.data())
                        .map_err(|e| protocol_error("SCRAM", e))?;
                    frontend::sasl_response(state.message(), &mut self.write_buf)
                        .map_err(|e| protocol_error("auth", e))?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationSaslFinal(body) => {
                    let state = scram
                        .as_mut()
                        .ok_or_else(|| protocol_error("auth", "unexpected SASL final"))?;
                    state
                        .finish(body.data())
                        .map_err(|e| protocol_error("SCRAM", e))?;
                }
                backend::Message::ErrorResponse(body) => {
                    return Err(WorkerError::Connect {
                        endpoint: self.endpoint.to_string(),
                        reason: format!(
                            "the server refused the connection: {}",
                            server_error(&body)
                        ),
                    });
                }
                backend::Message::ReadyForQuery(_) => return Ok(()),
                _ => {}
            }
        }
    }

    /// Starts `copy_sql` (a `COPY … FROM STDIN` statement). `Ok(None)` when the server accepted it
    /// and waits for data, `Ok(Some(error))` when it refused it.
    pub async fn start_copy(&mut self, copy_sql: &str) -> Result<Option<ServerError>> {
        frontend::query(copy_sql, &mut self.write_buf).map_err(|e| protocol_error("query", e))?;
        self.flush().await?;
        loop {
            match self.read_message().await? {
                backend::Message::CopyInResponse(_) => return Ok(None),
                backend::Message::ErrorResponse(body) => {
                    let error = server_error(&body);
                    self.wait_ready().await?;
                    return Ok(Some(error));
                }
                _ => {}
            }
        }
    }

    /// Sends COPY data (any split is fine; each frame stays far below the 64 MiB message cap).
    pub async fn send(&mut self, mut data: &[u8]) -> Result<()> {
        const FRAME: usize = 4 * 1024 * 1024;
        while !data.is_empty() {
            let take = data.len().min(FRAME);
            self.write_buf.extend_from_slice(b"d");
            self.write_buf
                .extend_from_slice(&((take + 4) as i32).to_be_bytes());
            self.write_buf.extend_from_slice(&data[..take]);
            self.flush().await?;
            data = &data[take..];
        }
        Ok(())
    }

    /// Ends the data; returns what the server did.
    pub async fn finish(&mut self) -> Result<CopyResult> {
        frontend::copy_done(&mut self.write_buf);
        self.flush().await?;
        let mut result = None;
        loop {
            match self.read_message().await? {
                backend::Message::CommandComplete(body) => {
                    let tag = body.tag().map_err(|e| protocol_error("command tag", e))?;
                    let rows = tag
                        .rsplit(' ')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    result = Some(CopyResult::Copied(rows));
                }
                backend::Message::ErrorResponse(body) => {
                    result = Some(CopyResult::Refused(server_error(&body)))
                }
                backend::Message::ReadyForQuery(_) => {
                    return result
                        .ok_or_else(|| protocol_error("copy", "no result before ReadyForQuery"));
                }
                _ => {}
            }
        }
    }

    /// Aborts the COPY: nothing is stored.
    pub async fn abort(&mut self, reason: &str) -> Result<()> {
        frontend::copy_fail(reason, &mut self.write_buf)
            .map_err(|e| protocol_error("copy fail", e))?;
        self.flush().await?;
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<()> {
        loop {
            if let backend::Message::ReadyForQuery(_) = self.read_message().await? {
                return Ok(());
            }
        }
    }
}

impl Drop for SimpleCopyClient {
    fn drop(&mut self) {
        // Best effort: a Terminate message if the socket takes it at once; it closes either way.
        let mut buf = BytesMut::new();
        frontend::terminate(&mut buf);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let _ = std::pin::Pin::new(&mut self.stream).poll_write(&mut cx, buf.chunk());
    }
}
