//! Reading a log directory: finding its streams and their segment files,
//! and walking a stream's lines with their file and byte offset.
//!
//! A log directory holds one directory per stream (named by stream id)
//! with `seg-NNNNNN.jsonl` files and a `head.json`. A stream directory
//! may also be given on its own.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{AuditError, ErrorKind, Result};

/// The stream directories under `path` (or `path` itself when it is one),
/// sorted by name, which for UUIDv7 stream ids is by creation time.
pub fn list_streams(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = fs::metadata(path).map_err(|e| {
        AuditError::new(
            ErrorKind::InvalidLog,
            format!("cannot open log {}: {e}", path.display()),
        )
        .with_source(e)
    })?;
    if !meta.is_dir() {
        return Err(AuditError::new(
            ErrorKind::InvalidLog,
            format!("{} is not a log directory", path.display()),
        ));
    }
    if !list_segments(path)?.is_empty() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut streams = Vec::new();
    for entry in read_dir(path)? {
        let p = entry;
        if p.is_dir() && !list_segments(&p)?.is_empty() {
            streams.push(p);
        }
    }
    streams.sort();
    Ok(streams)
}

fn read_dir(path: &Path) -> Result<Vec<PathBuf>> {
    let rd = fs::read_dir(path).map_err(|e| {
        AuditError::new(
            ErrorKind::InvalidLog,
            format!("cannot list {}: {e}", path.display()),
        )
        .with_source(e)
    })?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| {
            AuditError::new(
                ErrorKind::InvalidLog,
                format!("cannot list {}: {e}", path.display()),
            )
            .with_source(e)
        })?;
        out.push(entry.path());
    }
    Ok(out)
}

/// The segment files of a stream directory, in order.
pub fn list_segments(stream_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut segs: Vec<PathBuf> = read_dir(stream_dir)?
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seg-") && n.ends_with(".jsonl"))
        })
        .collect();
    segs.sort();
    Ok(segs)
}

/// One line of a stream.
#[derive(Debug)]
pub struct Line<'a> {
    /// Index of the segment in the stream's list.
    pub segment: usize,
    /// Byte offset of the line in its segment.
    pub offset: u64,
    /// The line without its newline.
    pub bytes: &'a [u8],
    /// Whether the line ended with a newline (false only for a last line).
    pub terminated: bool,
    /// Whether this is the stream's last line.
    pub last: bool,
}

/// The lines of one segment's bytes; `last_segment` marks the last line
/// as the stream's last.
pub fn segment_lines(segment: usize, data: &[u8], last_segment: bool) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let mut start = 0usize;
    while start < data.len() {
        let rest = data.get(start..).unwrap_or_default();
        let (len, terminated) = match memchr::memchr(b'\n', rest) {
            Some(i) => (i, true),
            None => (rest.len(), false),
        };
        out.push(Line {
            segment,
            offset: start as u64,
            bytes: rest.get(..len).unwrap_or_default(),
            terminated,
            last: false,
        });
        start += len + usize::from(terminated);
    }
    if last_segment && let Some(l) = out.last_mut() {
        l.last = true;
    }
    out
}

/// The whole contents of a stream's segments, read once.
pub struct StreamFiles {
    /// The stream directory.
    pub dir: PathBuf,
    /// Segment paths.
    pub segments: Vec<PathBuf>,
    contents: Vec<Vec<u8>>,
}

impl StreamFiles {
    /// Reads every segment of a stream directory.
    pub fn read(dir: &Path) -> Result<StreamFiles> {
        let segments = list_segments(dir)?;
        let mut contents = Vec::with_capacity(segments.len());
        for s in &segments {
            contents.push(fs::read(s).map_err(|e| {
                AuditError::new(
                    ErrorKind::InvalidLog,
                    format!("cannot read {}: {e}", s.display()),
                )
                .with_source(e)
            })?);
        }
        Ok(StreamFiles {
            dir: dir.to_path_buf(),
            segments,
            contents,
        })
    }

    /// The directory's name, which is the stream id.
    pub fn dir_name(&self) -> String {
        self.dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string()
    }

    /// Every line, in file order.
    pub fn lines(&self) -> Vec<Line<'_>> {
        let mut out = Vec::new();
        for (si, data) in self.contents.iter().enumerate() {
            out.extend(segment_lines(si, data, false));
        }
        if let Some(l) = out.last_mut() {
            l.last = true;
        }
        out
    }
}
