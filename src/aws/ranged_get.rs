//! One byte span of an S3 object, read as consecutive pieces (blocks) through a single GET
//! that is resumed from the first unread byte when the stream breaks.
//!
//! A streamed copy used to issue one ranged GET per block. A few long GETs cut into blocks as
//! they arrive cost far fewer requests against S3, and far less work against servers that
//! read the whole object for every GET (moto does; decisions item 46).

use std::ops::Range;

use aws_sdk_s3::primitives::ByteStream;
use bytes::{Bytes, BytesMut};
use tokio::sync::Mutex;

use super::s3::{map_sdk_error, S3Source};
use crate::error::{Error, ErrorKind, Idempotency, Mismatch, Result};

/// Consecutive pieces of `range` of one object version. Each [`SpanReader::next`] returns the
/// next `len` bytes; a broken or short stream is resumed by a new GET from the first byte not
/// yet read, under the crate's retry policy, and bytes already received are kept.
pub struct SpanReader<'a> {
    s3: &'a S3Source,
    bucket: &'a str,
    key: &'a str,
    etag: &'a str,
    end: u64,
    state: Mutex<State>,
}

struct State {
    /// The first byte not yet handed out.
    pos: u64,
    /// Bytes of the next piece received so far; kept when the stream breaks.
    partial: BytesMut,
    /// Bytes received past the piece being assembled.
    carry: Bytes,
    /// The open response body, if any.
    body: Option<ByteStream>,
    /// GETs issued: the first plus one per resume.
    gets: u32,
}

impl S3Source {
    /// A reader of bytes `range` of the object, only while its ETag is `etag` (a changed
    /// object fails with [`ErrorKind::Precondition`] instead of mixing versions). No request
    /// is made until the first piece is asked for.
    pub fn span<'a>(&'a self, bucket: &'a str, key: &'a str, etag: &'a str, range: Range<u64>) -> SpanReader<'a> {
        SpanReader {
            s3: self,
            bucket,
            key,
            etag,
            end: range.end,
            state: Mutex::new(State {
                pos: range.start,
                partial: BytesMut::new(),
                carry: Bytes::new(),
                body: None,
                gets: 0,
            }),
        }
    }
}

impl SpanReader<'_> {
    /// The next `len` bytes of the span.
    pub async fn next(&self, len: u64) -> Result<Bytes> {
        let (bucket, key) = (self.bucket, self.key);
        self.s3
            .retry_policy()
            .run("s3 get span", Idempotency::Idempotent, || async {
                let mut guard = self.state.lock().await;
                let st = &mut *guard;
                if st.pos + len > self.end {
                    return Err(Error::internal(format!(
                        "s3://{bucket}/{key}: piece {}+{len} runs past the span's end {}",
                        st.pos, self.end
                    )));
                }
                let len = len as usize;
                while st.partial.len() < len {
                    let need = len - st.partial.len();
                    if !st.carry.is_empty() {
                        let take = need.min(st.carry.len());
                        if st.partial.is_empty() && take == need {
                            // The whole piece is in one received chunk: hand it out uncopied.
                            st.pos += len as u64;
                            return Ok(st.carry.split_to(take));
                        }
                        st.partial.reserve(need);
                        st.partial.extend_from_slice(&st.carry.split_to(take));
                        continue;
                    }
                    let at = st.pos + st.partial.len() as u64;
                    let body = match st.body.take() {
                        Some(b) => st.body.insert(b),
                        None => {
                            st.gets += 1;
                            st.body.insert(self.open(at).await?)
                        }
                    };
                    let why = match body.try_next().await {
                        Ok(Some(chunk)) => {
                            st.carry = chunk;
                            continue;
                        }
                        Ok(None) => format!("the response ended at byte {at} before the span's end {}", self.end),
                        Err(e) => format!("reading body at byte {at}: {e}"),
                    };
                    // Drop the broken stream; the retry reopens from `at`.
                    st.body = None;
                    return Err(Error::new(ErrorKind::Transient, format!("s3://{bucket}/{key}: {why}")));
                }
                st.pos += len as u64;
                Ok(st.partial.split().freeze())
            })
            .await
    }

    /// GETs issued so far (the first plus one per resume).
    pub async fn gets(&self) -> u32 {
        self.state.lock().await.gets
    }

    /// Opens `from..end` of the pinned version and checks that the answer is that range.
    async fn open(&self, from: u64) -> Result<ByteStream> {
        let (bucket, key) = (self.bucket, self.key);
        let out = self
            .s3
            .client()
            .get_object()
            .bucket(bucket)
            .key(key)
            .if_match(format!("\"{}\"", self.etag))
            .range(format!("bytes={from}-{}", self.end - 1))
            .send()
            .await
            .map_err(|e| map_sdk_error(e, bucket, key, "get object"))?;
        // A server that ignored Range, or answered another one, would hand us the wrong bytes
        // for every block (ranged GETs used to check the body's length for the same reason).
        let want = format!("bytes {from}-{}/", self.end - 1);
        if !out.content_range().is_some_and(|r| r.starts_with(&want)) {
            return Err(Error::mismatch(
                Mismatch::Range,
                format_args!(
                    "s3://{bucket}/{key}: asked for bytes {from}-{} and got Content-Range {:?}",
                    self.end - 1,
                    out.content_range()
                ),
            ));
        }
        Ok(out.body)
    }
}
