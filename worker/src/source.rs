//! Reading a data file: stream → MD5 and byte count → gunzip → lines → blocks.
//!
//! Runs on a blocking thread (it is synchronous IO and CPU). A 0-byte object is an empty file;
//! otherwise the bytes are a (possibly multi-member) gzip stream, and an empty member is an empty
//! file. Every byte passes through the MD5 before decompression, including lines skipped on resume,
//! so the checksum always covers the whole object. Blank lines count as lines (the checkpoint is in
//! physical lines) but not as items. Blocks end at every multiple of `chunk_lines`, so a retry
//! re-forms exactly the same chunks.
//!
//! Memory is bounded whatever the file holds: a line is never buffered past
//! [`MAX_LINE_BYTES`] (a small gzip file can hold a line of many GiB); the resume skip reads
//! lines without keeping them, and the plan's sample stops at a byte budget.

use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine;
use md5::{Digest, Md5};

use crate::decode::{LineRef, RawBlock};
use crate::{Result, WorkerError};

/// The longest line accepted (defined beside the text readers of [`crate::dump`], which bound a
/// scan dump's item by it too).
pub use crate::dump::MAX_LINE_BYTES;

/// How to frame a file.
#[derive(Clone, Debug)]
pub struct SourceSpec {
    /// The file, for messages.
    pub location: String,
    /// Lines already committed: read (for the MD5) but not emitted.
    pub skip_lines: u64,
    /// Chunk size in lines; blocks never cross a multiple of it.
    pub chunk_lines: u64,
    /// Maximum lines per block.
    pub block_lines: usize,
    /// Maximum bytes per block (soft).
    pub block_bytes: usize,
}

/// A block of lines and where it sits in the file.
#[derive(Debug)]
pub struct FramedBlock {
    /// The lines.
    pub block: RawBlock,
    /// Physical lines before the block.
    pub first_line: u64,
    /// Physical lines through the end of the block.
    pub last_line: u64,
    /// Whether the block ends a chunk.
    pub chunk_end: bool,
}

/// What the whole file turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceSummary {
    /// Base64 MD5 of the stored bytes.
    pub md5_base64: String,
    /// Stored bytes.
    pub bytes: u64,
    /// Physical lines after decompression.
    pub physical_lines: u64,
    /// Non-blank lines (items).
    pub items: u64,
}

struct HashingReader<R> {
    inner: R,
    md5: Md5,
    bytes: u64,
    progress: Option<Arc<AtomicU64>>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.md5.update(&buf[..n]);
        self.bytes += n as u64;
        if let Some(progress) = &self.progress {
            progress.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// How reading one line ended.
#[derive(Debug, PartialEq, Eq)]
enum LineRead {
    /// End of the input: nothing was read.
    Eof,
    /// A line (with its `\n`, unless it is the last line of a file without one).
    Line,
    /// The line is longer than [`MAX_LINE_BYTES`]: reading stopped without holding it.
    TooLong,
}

/// Reads one line into `out` (when given; otherwise skips it), holding at most
/// [`MAX_LINE_BYTES`] plus its line end.
fn read_line_bounded<R: BufRead>(
    reader: &mut R,
    mut out: Option<&mut Vec<u8>>,
) -> std::io::Result<LineRead> {
    // The content may be followed by "\r\n".
    const MOST: usize = MAX_LINE_BYTES + 2;
    let mut length = 0usize;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(if length == 0 {
                LineRead::Eof
            } else {
                LineRead::Line
            });
        }
        let (take, done) = match memchr::memchr(b'\n', buf) {
            Some(at) => (at + 1, true),
            None => (buf.len(), false),
        };
        let too_long = length + take > MOST;
        if too_long {
            return Ok(LineRead::TooLong);
        }
        if let Some(out) = out.as_mut() {
            out.extend_from_slice(&buf[..take]);
        }
        length += take;
        reader.consume(take);
        if done {
            return Ok(LineRead::Line);
        }
    }
}

fn too_long(location: &str, line_no: u64) -> WorkerError {
    WorkerError::CorruptFile {
        location: location.to_string(),
        reason: format!(
            "line {line_no} is longer than {MAX_LINE_BYTES} bytes (16 MiB), which no DynamoDB \
             export line is: reading stopped there"
        ),
    }
}

/// Reads `raw` to the end, calling `emit` for each block in order, and returns the summary.
/// `emit` returning an error stops the read (the consumer went away).
pub fn read_source<R: Read>(
    raw: R,
    spec: &SourceSpec,
    progress_bytes: Option<Arc<AtomicU64>>,
    mut emit: impl FnMut(FramedBlock) -> Result<()>,
) -> Result<SourceSummary> {
    let corrupt = |e: std::io::Error| -> WorkerError {
        match e.kind() {
            std::io::ErrorKind::InvalidData
            | std::io::ErrorKind::InvalidInput
            | std::io::ErrorKind::UnexpectedEof => WorkerError::CorruptFile {
                location: spec.location.clone(),
                reason: format!("gzip stream: {e}"),
            },
            _ => WorkerError::Read {
                location: spec.location.clone(),
                source: e,
            },
        }
    };
    let hashing = HashingReader {
        inner: raw,
        md5: Md5::new(),
        bytes: 0,
        progress: progress_bytes,
    };
    let mut buffered = BufReader::with_capacity(256 * 1024, hashing);
    let is_empty_object = buffered.fill_buf().map_err(corrupt)?.is_empty();
    let summary_of = |hashing: HashingReader<R>, physical_lines: u64, items: u64| SourceSummary {
        md5_base64: base64::engine::general_purpose::STANDARD.encode(hashing.md5.finalize()),
        bytes: hashing.bytes,
        physical_lines,
        items,
    };
    if is_empty_object {
        if spec.skip_lines > 0 {
            return Err(WorkerError::CorruptFile {
                location: spec.location.clone(),
                reason: format!(
                    "the file is empty but {} of its lines were committed before",
                    spec.skip_lines
                ),
            });
        }
        return Ok(summary_of(buffered.into_inner(), 0, 0));
    }
    // Gzip or plain text; a scan dump becomes one `{"Item":…}` line per item (crate::dump).
    let mut lines = BufReader::with_capacity(
        256 * 1024,
        crate::dump::Text::new(buffered, plain_allowed(&spec.location)).map_err(corrupt)?,
    );
    let mut line_no = 0u64;
    let mut items = 0u64;
    while line_no < spec.skip_lines {
        // Committed lines are skipped without being kept; only whether they are blank counts.
        let blank = skip_line(&mut lines).map_err(corrupt)?;
        match blank {
            None => {
                return Err(WorkerError::CorruptFile {
                    location: spec.location.clone(),
                    reason: format!(
                    "the file has {line_no} lines but {} were committed before: it changed since",
                    spec.skip_lines
                ),
                })
            }
            Some(Err(())) => return Err(too_long(&spec.location, line_no + 1)),
            Some(Ok(blank)) => {
                line_no += 1;
                if !blank {
                    items += 1;
                }
            }
        }
    }
    let new_block = || RawBlock {
        data: Vec::with_capacity(spec.block_bytes.min(1 << 20)),
        lines: Vec::with_capacity(spec.block_lines),
    };
    let mut block = new_block();
    let mut block_first = line_no;
    loop {
        let start = block.data.len();
        match read_line_bounded(&mut lines, Some(&mut block.data)).map_err(corrupt)? {
            LineRead::Eof => break,
            LineRead::TooLong => return Err(too_long(&spec.location, line_no + 1)),
            LineRead::Line => {}
        }
        line_no += 1;
        let mut end = block.data.len();
        if block.data[end - 1] == b'\n' {
            end -= 1;
        }
        if end > start && block.data[end - 1] == b'\r' {
            end -= 1;
        }
        if end - start > MAX_LINE_BYTES {
            return Err(WorkerError::CorruptFile {
                location: spec.location.clone(),
                reason: format!(
                    "line {line_no} is {} bytes long, over the {MAX_LINE_BYTES}-byte limit",
                    end - start
                ),
            });
        }
        block.data.truncate(end);
        if is_blank(&block.data[start..end]) {
            block.data.truncate(start);
        } else {
            items += 1;
            block.lines.push(LineRef {
                line_no,
                start,
                end,
            });
        }
        let chunk_end = line_no % spec.chunk_lines == 0;
        if chunk_end
            || block.lines.len() >= spec.block_lines
            || block.data.len() >= spec.block_bytes
        {
            emit(FramedBlock {
                block: std::mem::replace(&mut block, new_block()),
                first_line: block_first,
                last_line: line_no,
                chunk_end,
            })?;
            block_first = line_no;
        }
    }
    if line_no > block_first {
        emit(FramedBlock {
            block,
            first_line: block_first,
            last_line: line_no,
            chunk_end: false,
        })?;
    }
    // Drain whatever follows the gzip data so the MD5 covers every stored byte.
    let mut buffered = lines.into_inner().into_inner();
    std::io::copy(&mut buffered, &mut std::io::sink()).map_err(corrupt)?;
    Ok(summary_of(buffered.into_inner(), line_no, items))
}

/// Whether a data file may be plain text (a scan dump): any file not named `.gz`.
fn plain_allowed(location: &str) -> bool {
    !location.ends_with(".gz")
}

/// A blocking reader over an object stream, for the reading thread. Call it on the async side:
/// it captures the current runtime.
pub fn blocking_reader(stream: ferry_shared::store::ObjectStream) -> impl Read + Send {
    tokio_util::io::SyncIoBridge::new(stream)
}

/// Skips one line without keeping it: `None` at the end of the input, `Some(Err(()))` for a line
/// over the limit, else whether it was blank.
fn skip_line<R: BufRead>(reader: &mut R) -> std::io::Result<Option<std::result::Result<bool, ()>>> {
    let mut blank = true;
    let mut length = 0usize;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok((length > 0).then_some(Ok(blank)));
        }
        let (take, done) = match memchr::memchr(b'\n', buf) {
            Some(at) => (at + 1, true),
            None => (buf.len(), false),
        };
        blank &= is_blank(&buf[..take]);
        length += take;
        reader.consume(take);
        if length > MAX_LINE_BYTES + 2 {
            return Ok(Some(Err(())));
        }
        if done {
            return Ok(Some(Ok(blank)));
        }
    }
}

/// Bytes of sampled lines kept per data file at most (the plan reads the sample one file at a
/// time, so this bounds its memory).
pub const MAX_SAMPLE_BYTES: usize = 32 * 1024 * 1024;

/// Reads up to `max_items` non-blank lines from the start of a data file (for schema inference),
/// stopping once they hold `max_bytes`. A 0-byte object has none; a line over the limit is an
/// error naming the file.
pub fn sample_lines<R: Read>(
    raw: R,
    location: &str,
    max_items: usize,
    max_bytes: usize,
) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    if max_items == 0 || max_bytes == 0 {
        return Ok(out);
    }
    let mut bytes = 0usize;
    for_each_line(raw, location, |_, line| {
        bytes += line.len();
        out.push(line.to_vec());
        out.len() < max_items && bytes < max_bytes
    })?;
    Ok(out)
}

/// Calls `each` with every non-blank line of a data file (gzip, or plain text where the file's
/// name allows it) and its line number, one line in memory at a time, until it returns `false`.
/// A 0-byte object has none; a line over the limit is an error naming the file and the line.
pub fn for_each_line<R: Read>(
    raw: R,
    location: &str,
    mut each: impl FnMut(u64, &[u8]) -> bool,
) -> Result<()> {
    let corrupt = |e: std::io::Error| WorkerError::CorruptFile {
        location: location.to_string(),
        reason: format!("gzip stream: {e}"),
    };
    let mut buffered = BufReader::with_capacity(64 * 1024, raw);
    if buffered.fill_buf().map_err(corrupt)?.is_empty() {
        return Ok(());
    }
    let mut lines =
        BufReader::new(crate::dump::Text::new(buffered, plain_allowed(location)).map_err(corrupt)?);
    let mut line = Vec::new();
    let mut line_no = 0u64;
    loop {
        line.clear();
        line_no += 1;
        match read_line_bounded(&mut lines, Some(&mut line)).map_err(corrupt)? {
            LineRead::Eof => return Ok(()),
            LineRead::TooLong => return Err(too_long(location, line_no)),
            LineRead::Line => {}
        }
        if !is_blank(&line) && !each(line_no, &line) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gz(text: &str) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(text.as_bytes()).unwrap();
        encoder.finish().unwrap()
    }

    fn spec(skip: u64, chunk: u64, block: usize) -> SourceSpec {
        SourceSpec {
            location: "f.json.gz".into(),
            skip_lines: skip,
            chunk_lines: chunk,
            block_lines: block,
            block_bytes: 1 << 20,
        }
    }

    type Framed = Vec<(u64, u64, bool, Vec<u64>)>;

    fn frame(bytes: &[u8], spec: &SourceSpec) -> Result<(Framed, SourceSummary)> {
        let mut blocks = Vec::new();
        let summary = read_source(bytes, spec, None, |b| {
            blocks.push((
                b.first_line,
                b.last_line,
                b.chunk_end,
                b.block.lines.iter().map(|l| l.line_no).collect(),
            ));
            Ok(())
        })?;
        Ok((blocks, summary))
    }

    #[test]
    fn blocks_end_at_chunk_boundaries_and_count_blank_lines() {
        let text = "a\nb\n\nc\r\nd\ne\nf";
        let bytes = gz(text);
        let (blocks, summary) = frame(&bytes, &spec(0, 3, 2)).unwrap();
        assert_eq!(
            blocks,
            vec![
                (0, 2, false, vec![1, 2]),
                (2, 3, true, vec![]),
                (3, 5, false, vec![4, 5]),
                (5, 6, true, vec![6]),
                (6, 7, false, vec![7]),
            ]
        );
        assert_eq!(summary.physical_lines, 7);
        assert_eq!(summary.items, 6);
        assert_eq!(
            summary.md5_base64,
            ferry_shared::manifest::md5_base64(&bytes)
        );
        assert_eq!(summary.bytes, bytes.len() as u64);
    }

    #[test]
    fn resume_skips_committed_lines_but_hashes_them() {
        let bytes = gz("a\nb\nc\nd\n");
        let (blocks, summary) = frame(&bytes, &spec(2, 2, 10)).unwrap();
        assert_eq!(blocks, vec![(2, 4, true, vec![3, 4])]);
        assert_eq!(summary.items, 4);
        assert_eq!(
            summary.md5_base64,
            ferry_shared::manifest::md5_base64(&bytes)
        );
        let err = frame(&bytes, &spec(9, 2, 10)).unwrap_err().to_string();
        assert!(err.contains("has 4 lines but 9 were committed"), "{err}");
    }

    #[test]
    fn empty_objects_and_empty_gzip_members_are_empty_files() {
        let (blocks, summary) = frame(b"", &spec(0, 10, 10)).unwrap();
        assert!(blocks.is_empty());
        assert_eq!((summary.items, summary.bytes), (0, 0));
        let empty_member = gz("");
        let (blocks, summary) = frame(&empty_member, &spec(0, 10, 10)).unwrap();
        assert!(blocks.is_empty());
        assert_eq!(summary.items, 0);
        assert_eq!(summary.bytes, empty_member.len() as u64);
    }

    #[test]
    fn multi_member_gzip_is_read_whole() {
        let mut bytes = gz("a\nb\n");
        bytes.extend(gz("c\n"));
        let (_, summary) = frame(&bytes, &spec(0, 10, 10)).unwrap();
        assert_eq!(summary.items, 3);
    }

    #[test]
    fn truncated_and_garbage_streams_fail_naming_the_file() {
        let bytes = gz(&"{\"Item\":{}}\n".repeat(1000));
        let err = frame(&bytes[..bytes.len() / 2], &spec(0, 10, 10)).unwrap_err();
        assert!(matches!(err, WorkerError::CorruptFile { .. }), "{err}");
        assert!(err.to_string().contains("f.json.gz"), "{err}");
        let err = frame(b"this is not gzip", &spec(0, 10, 10)).unwrap_err();
        assert!(matches!(err, WorkerError::CorruptFile { .. }), "{err}");
    }

    /// Returns at most `step` bytes per read, so lines and gzip blocks split at every boundary.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    #[test]
    fn decoded_output_is_identical_for_every_block_size_and_byte_split() {
        use crate::decode::tests::test_schema;
        use crate::decode::Decoder;
        use ferry_shared::schema::OnTypeMismatch;
        let mut text = String::new();
        for i in 0..300 {
            match i % 7 {
                0 => text.push_str(&format!("{{\"Item\":{{\"pk\":{{\"S\":\"é{i}\"}},\"sk\":{{\"N\":\"{i}.5\"}},\"ss\":{{\"SS\":[\"日本\",\"x\"]}}}}}}\n")),
                1 => text.push_str("{\"Item\":{\"pk\":{\"S\":\"bad\"}\n"),
                2 => text.push('\n'),
                _ => text.push_str(&format!("{{\"Item\":{{\"pk\":{{\"S\":\"k{i}\"}},\"sk\":{{\"N\":\"-{i}E-3\"}},\"m\":{{\"M\":{{\"a\":{{\"N\":\"{i}\"}}}}}},\"extra\":{{\"B\":\"AAE=\"}}}}}}\r\n")),
            }
        }
        let bytes = gz(&text);
        let decoder = Decoder::new(test_schema(OnTypeMismatch::Overflow));
        let run = |block_lines: usize, step: usize, chunk_lines: u64| {
            let mut copy = Vec::new();
            let mut rejects = Vec::new();
            let spec = SourceSpec {
                location: "f".into(),
                skip_lines: 0,
                chunk_lines,
                block_lines,
                block_bytes: 1 << 20,
            };
            let summary = read_source(
                Trickle {
                    bytes: &bytes,
                    step,
                },
                &spec,
                None,
                |framed| {
                    let decoded = decoder.decode(&framed.block);
                    crate::copy::encode_batch(decoder.schema(), &decoded.batch, None, &mut copy)
                        .unwrap();
                    rejects.extend(decoded.rejects.into_iter().map(|r| (r.line_no, r.reason)));
                    Ok(())
                },
            )
            .unwrap();
            (copy, rejects, summary)
        };
        let baseline = run(4096, 1 << 16, 1_000_000);
        assert_eq!(baseline.2.items, 257);
        assert_eq!(baseline.1.len(), 43);
        for block_lines in [1, 3, 100, 300] {
            for step in [1, 3, 5, 4096] {
                for chunk_lines in [1, 7, 1_000_000] {
                    assert_eq!(
                        run(block_lines, step, chunk_lines),
                        baseline,
                        "block {block_lines}, read step {step}, chunk {chunk_lines}"
                    );
                }
            }
        }
    }

    /// A gzip stream of one line of `len` bytes ('a'), without a newline: multi-member, so it is
    /// made in a few milliseconds whatever `len` is.
    fn gzip_bomb(len: usize) -> Vec<u8> {
        let block = gz(&"a".repeat(1 << 20));
        let mut bytes = Vec::new();
        for _ in 0..len >> 20 {
            bytes.extend_from_slice(&block);
        }
        bytes
    }

    #[test]
    fn an_overlong_line_is_refused_without_being_held() {
        // 64 MiB of one line: refused once it passes the limit; nothing after it is read.
        let bytes = gzip_bomb(64 << 20);
        let err = frame(&bytes, &spec(0, 10, 10)).unwrap_err().to_string();
        assert!(
            err.contains("line 1 is longer than 16777216 bytes"),
            "{err}"
        );
        // The same line met while skipping committed lines on resume.
        let mut resumed = gz("a\n");
        resumed.extend(gzip_bomb(32 << 20));
        let err = frame(&resumed, &spec(2, 10, 10)).unwrap_err().to_string();
        assert!(err.contains("line 2 is longer"), "{err}");
        // And in the plan's sample.
        let err = sample_lines(&bytes[..], "f", 10, MAX_SAMPLE_BYTES)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1 is longer"), "{err}");
        // A line of exactly the limit is framed.
        let mut exact = gz(&"b".repeat(MAX_LINE_BYTES));
        exact.extend(gz("\nc\n"));
        let (blocks, summary) = frame(&exact, &spec(0, 10, 10)).unwrap();
        assert_eq!(summary.items, 2);
        assert_eq!(blocks.iter().map(|b| b.3.len()).sum::<usize>(), 2);
    }

    #[test]
    fn the_sample_stops_at_its_byte_budget() {
        let text: String = (0..1000)
            .map(|i| format!("line {i:04} {}\n", "x".repeat(990)))
            .collect();
        let lines = sample_lines(&gz(&text)[..], "f", 1000, 10_000).unwrap();
        assert_eq!(
            lines.len(),
            10,
            "ten 1001-byte lines reach the 10,000-byte budget"
        );
        assert_eq!(
            sample_lines(&gz(&text)[..], "f", 3, 1 << 20).unwrap().len(),
            3
        );
    }
}
