//! S3 Inventory as a listing source: a report's `manifest.json` and its CSV data files (gzip),
//! in the format AWS documents ("Locating your inventory list", "Amazon S3 inventory list").
//!
//! - The manifest names the source bucket, the format and the column order (`fileSchema`),
//!   and the data files, as keys in the bucket that holds the manifest.
//! - Each data file is a gzip of CSV rows, every field quoted, with no header. Keys are
//!   URL-encoded with a space as `+`, as in event notifications.
//! - A report of all versions has `IsLatest` and `IsDeleteMarker`; only current objects are
//!   listed from it.
//!
//! A data file is read as a stream: gzip is undone as the bytes arrive and rows are parsed one
//! line at a time, so memory holds one buffer, never the file. Its bytes are hashed on the
//! way: at its end, a file whose MD5 or size is not the manifest's (`MD5checksum`, `size`)
//! is refused, naming it, since its rows may not be the report's.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::tokio::bufread::GzipDecoder;
use md5::{Digest, Md5};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, ReadBuf};

use super::s3::S3Source;
use crate::error::{Error, ErrorKind, Result};
use crate::model::ListedObject;

/// A `manifest.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The bucket the report lists.
    pub source_bucket: String,
    /// `CSV`, `ORC` or `Parquet`.
    pub file_format: String,
    /// The columns, comma-separated (CSV).
    pub file_schema: String,
    /// When the report began scanning (milliseconds since the epoch, as a string).
    #[serde(default)]
    pub creation_timestamp: Option<String>,
    /// The data files.
    pub files: Vec<DataFile>,
}

/// One data file of a report.
#[derive(Debug, Clone, Deserialize)]
pub struct DataFile {
    /// Its key, in the manifest's bucket.
    pub key: String,
    /// Its size in bytes.
    #[serde(default)]
    pub size: Option<u64>,
    /// The MD5 of its bytes, in hex.
    #[serde(default, rename = "MD5checksum")]
    pub md5: Option<String>,
}

/// Where a report is and what it holds: its data files' bucket and keys, and its columns.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// The bucket of the manifest and its data files.
    pub bucket: String,
    /// The data files, in the manifest's order.
    pub files: Vec<String>,
    /// What each data file must be: its MD5 (hex) and size, when the manifest says.
    sums: Vec<(Option<String>, Option<u64>)>,
    /// When the report began scanning (RFC 3339), when the manifest says.
    pub taken_at: Option<String>,
    columns: Columns,
}

/// The positions of the columns a listing needs.
#[derive(Debug, Clone, Copy)]
struct Columns {
    key: usize,
    size: Option<usize>,
    etag: Option<usize>,
    modified: Option<usize>,
    class: Option<usize>,
    latest: Option<usize>,
    delete_marker: Option<usize>,
}

impl Inventory {
    /// Reads and checks the manifest at `s3://bucket/key` for a run over `source`. Errors
    /// name the manifest field to fix.
    pub async fn open(s3: &S3Source, bucket: &str, key: &str, source: &str) -> Result<Inventory> {
        let Some((_, body)) = s3.get_whole(bucket, key).await? else {
            return Err(Error::invalid(format!(
                "inventory manifest s3://{bucket}/{key} does not exist (name a report's manifest.json)"
            )));
        };
        Inventory::parse(&body, bucket, key, source)
    }

    /// Checks a manifest's text (see [`Self::open`]).
    pub fn parse(text: &[u8], bucket: &str, key: &str, source: &str) -> Result<Inventory> {
        let at = format!("inventory manifest s3://{bucket}/{key}");
        let m: Manifest = serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(text))
            .map_err(|e| Error::invalid(format!("{at}: `{}`: {}", e.path(), e.inner())))?;
        if m.source_bucket != source {
            return Err(Error::invalid(format!(
                "{at}: `sourceBucket` is `{}`, not the run's bucket `{source}`",
                m.source_bucket
            )));
        }
        if !m.file_format.eq_ignore_ascii_case("CSV") {
            return Err(Error::invalid(format!(
                "{at}: `fileFormat` is `{}`; only CSV reports can be read (configure the report as CSV)",
                m.file_format
            )));
        }
        let names: Vec<String> = m
            .file_schema
            .split(',')
            .map(|c| c.trim().to_ascii_lowercase())
            .collect();
        let find = |n: &str| names.iter().position(|c| c == n);
        let Some(key_column) = find("key") else {
            return Err(Error::invalid(format!("{at}: `fileSchema` has no `Key` column")));
        };
        let columns = Columns {
            key: key_column,
            size: find("size"),
            etag: find("etag"),
            modified: find("lastmodifieddate"),
            class: find("storageclass"),
            latest: find("islatest"),
            delete_marker: find("isdeletemarker"),
        };
        let taken_at = m
            .creation_timestamp
            .as_deref()
            .and_then(|t| t.parse::<i64>().ok())
            .map(aws_smithy_types::DateTime::from_millis)
            .and_then(|t| super::s3::modified_rfc3339(&t));
        Ok(Inventory {
            bucket: bucket.to_string(),
            sums: m.files.iter().map(|f| (f.md5.clone(), f.size)).collect(),
            files: m.files.into_iter().map(|f| f.key).collect(),
            taken_at,
            columns,
        })
    }

    /// The current objects of data file `file` (an index into [`Self::files`]), read as
    /// they arrive, in the file's order.
    pub async fn rows(&self, s3: &S3Source, file: usize) -> Result<Rows> {
        let key = self.files[file].clone();
        let at = format!("inventory data file s3://{}/{key}", self.bucket);
        let body = s3.get_stream(&self.bucket, &key).await?;
        let (md5, size) = self.sums[file].clone();
        let checked = Checked {
            body: Box::pin(body.into_async_read()),
            hash: Md5::new(),
            bytes: 0,
            md5: md5.map(|m| m.to_ascii_lowercase()),
            size,
            wrong: None,
        };
        Ok(Rows {
            lines: BufReader::new(GzipDecoder::new(BufReader::new(checked))).lines(),
            columns: self.columns,
            at,
            line: 0,
        })
    }
}

/// A data file's bytes as they arrive, hashed and counted; at their end, compared with what
/// the manifest says of the file.
struct Checked {
    body: Pin<Box<dyn AsyncRead + Send>>,
    hash: Md5,
    bytes: u64,
    md5: Option<String>,
    size: Option<u64>,
    /// Why the file is not the manifest's, once its end showed it.
    wrong: Option<String>,
}

impl AsyncRead for Checked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        std::task::ready!(self.body.as_mut().poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            self.hash.update(new);
            self.bytes += new.len() as u64;
            return Poll::Ready(Ok(()));
        }
        // The end: the bytes read must be the file the manifest describes.
        let got = hex::encode(self.hash.clone().finalize());
        let wrong = match (&self.md5, self.size) {
            (_, Some(size)) if size != self.bytes => {
                Some(format!("its size is {} bytes, the manifest says {size}", self.bytes))
            }
            (Some(md5), _) if *md5 != got => Some(format!("its MD5 is {got}, the manifest's `MD5checksum` is {md5}")),
            _ => None,
        };
        if let Some(why) = wrong {
            self.wrong = Some(why.clone());
            return Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why)));
        }
        Poll::Ready(Ok(()))
    }
}

/// A data file's rows, streamed.
pub struct Rows {
    lines: tokio::io::Lines<BufReader<GzipDecoder<BufReader<Checked>>>>,
    columns: Columns,
    at: String,
    line: u64,
}

impl Rows {
    /// Why the file is not the one the manifest describes, if its end showed that: the
    /// report changed, or the file was cut (a reader that cannot trust the rows stops).
    fn wrong(&mut self) -> Option<Error> {
        let checked = self.lines.get_mut().get_mut().get_mut().get_mut();
        checked.wrong.as_ref().map(|why| {
            Error::invalid(format!(
                "{}: {why}; the report's files changed since its manifest was written, so its rows cannot be trusted (use a complete report)",
                self.at
            ))
        })
    }

    /// The next current object; `None` at the end of the file, once its bytes matched the
    /// manifest.
    pub async fn next(&mut self) -> Result<Option<ListedObject>> {
        loop {
            let line = match self.lines.next_line().await {
                Ok(line) => line,
                Err(e) => {
                    return Err(self.wrong().unwrap_or_else(|| {
                        Error::new(
                            ErrorKind::Transient,
                            format!("{}, line {}: reading: {e}", self.at, self.line + 1),
                        )
                    }))
                }
            };
            let Some(line) = line else {
                // The gzip stream may end before the body does: read the body to its end, so
                // every byte is hashed and compared.
                let rest = self.lines.get_mut().get_mut().get_mut();
                let drained = tokio::io::copy(rest, &mut tokio::io::sink()).await;
                if let Some(wrong) = self.wrong() {
                    return Err(wrong);
                }
                drained.map_err(|e| Error::new(ErrorKind::Transient, format!("{}: reading: {e}", self.at)))?;
                return Ok(None);
            };
            self.line += 1;
            if line.trim().is_empty() {
                continue;
            }
            let at = |why: String| Error::invalid(format!("{}, line {}: {why}", self.at, self.line));
            if let Some(o) = self.columns.object(&line).map_err(at)? {
                return Ok(Some(o));
            }
        }
    }
}

impl Columns {
    /// The current object a CSV row names (`None` for an older version or a delete marker).
    fn object(&self, line: &str) -> std::result::Result<Option<ListedObject>, String> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .buffer_capacity(line.len() + 8)
            .from_reader(line.as_bytes());
        let mut record = csv::StringRecord::new();
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => return Err("an empty row".into()),
            Err(e) => return Err(format!("not a CSV row: {e}")),
        }
        let field = |i: Option<usize>| i.and_then(|i| record.get(i)).map(str::trim).filter(|v| !v.is_empty());
        let yes = |i: Option<usize>| field(i).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if field(self.latest).is_some() && !yes(self.latest) || yes(self.delete_marker) {
            return Ok(None);
        }
        let raw = field(Some(self.key)).ok_or_else(|| format!("no key in column {}", self.key + 1))?;
        let key = super::events::decode_event_key(raw)?;
        let size = match field(self.size) {
            Some(s) => s.parse().map_err(|_| format!("`Size` is `{s}`, not a number"))?,
            None => 0,
        };
        let last_modified = match field(self.modified) {
            Some(t) => Some(
                aws_smithy_types::DateTime::from_str(t, aws_smithy_types::date_time::Format::DateTime)
                    .ok()
                    .and_then(|d| super::s3::modified_rfc3339(&d))
                    .ok_or_else(|| format!("`LastModifiedDate` is `{t}`, not a date"))?,
            ),
            None => None,
        };
        Ok(Some(ListedObject {
            key,
            size,
            etag: field(self.etag).unwrap_or_default().trim_matches('"').to_string(),
            storage_class: field(self.class).map(str::to_string),
            last_modified,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"{
        "sourceBucket": "src", "destinationBucket": "arn:aws:s3:::inv", "version": "2016-11-30",
        "creationTimestamp": "1514944800000", "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass",
        "files": [{"key": "r/data/a.csv.gz", "size": 10, "MD5checksum": "00"}]
    }"#;

    #[test]
    fn a_manifest_and_its_rows_read_as_aws_writes_them() {
        let inv = Inventory::parse(MANIFEST.as_bytes(), "inv", "r/manifest.json", "src").unwrap();
        assert_eq!(inv.files, vec!["r/data/a.csv.gz"]);
        assert_eq!(inv.taken_at.as_deref(), Some("2018-01-03T02:00:00Z"));
        let row = r#""src","dir/a+b%2Bc%C3%A9.txt","v1","true","false","12","2026-11-30T10:11:12.000Z","0123abcd","STANDARD_IA""#;
        let o = inv.columns.object(row).unwrap().unwrap();
        assert_eq!(o.key, "dir/a b+cé.txt", "form-decoded: `+` is a space, %2B a plus");
        assert_eq!((o.size, o.etag.as_str()), (12, "0123abcd"));
        assert_eq!(o.last_modified.as_deref(), Some("2026-11-30T10:11:12Z"));
        assert_eq!(o.storage_class.as_deref(), Some("STANDARD_IA"));
        // Older versions and delete markers are not listed.
        let old = r#""src","k","v0","false","false","1","2026-11-30T10:11:12.000Z","aa","STANDARD""#;
        assert_eq!(inv.columns.object(old).unwrap(), None);
        let marker = r#""src","k","v2","true","true","","","",""#;
        assert_eq!(inv.columns.object(marker).unwrap(), None);
    }

    #[test]
    fn a_bad_manifest_or_row_names_what_is_wrong() {
        let bad = |text: String| {
            Inventory::parse(text.as_bytes(), "inv", "m.json", "src")
                .unwrap_err()
                .to_string()
        };
        assert!(bad(MANIFEST.replace("\"src\"", "\"other\"")).contains("`sourceBucket` is `other`"));
        assert!(bad(MANIFEST.replace("\"CSV\"", "\"Parquet\"")).contains("`fileFormat` is `Parquet`"));
        assert!(bad(MANIFEST.replace("Bucket, Key,", "Bucket,")).contains("no `Key` column"));
        assert!(bad(MANIFEST.replace("\"files\"", "\"filez\"")).contains("files"));
        assert!(bad("[]".into()).contains("inventory manifest s3://inv/m.json"));
        let inv = Inventory::parse(MANIFEST.as_bytes(), "inv", "m.json", "src").unwrap();
        let e = inv
            .columns
            .object(r#""src","k","v","true","false","big","","",""#)
            .unwrap_err();
        assert!(e.contains("`Size` is `big`"), "{e}");
        let e = inv
            .columns
            .object(r#""src","%FF","v","true","false","1","","",""#)
            .unwrap_err();
        assert!(e.contains("UTF-8"), "{e}");
    }
}
