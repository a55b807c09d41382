//! Following a log directory like `tail -F`: every stream directory,
//! across segment rotations and new streams, whole lines only, from the
//! exporter's persisted cursor.
//!
//! There is no read position apart from the cursor: each batch is read
//! from the acknowledged position, so what was read but not acknowledged
//! is simply read again, and the memory held is one batch.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use agent_audit::writer::segment_file_name;

use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::exporter::Outgoing;
use crate::record::{RecordInfo, UNKNOWN, record_info, seq_and_kind};

/// How much one batch may hold: the in-flight window.
#[derive(Clone, Copy, Debug)]
pub struct TailLimits {
    /// Records.
    pub max_records: usize,
    /// Bytes of record lines.
    pub max_bytes: usize,
}

impl Default for TailLimits {
    fn default() -> Self {
        TailLimits {
            max_records: 512,
            max_bytes: 1 << 20,
        }
    }
}

/// A stream's records before its first event record (which decides the
/// tenant) are held back, up to this many lines.
const HOLD_LIMIT: usize = 256;

/// Where a batched line ends, for the cursor.
#[derive(Clone, Debug)]
struct Pos {
    segment: u32,
    end: u64,
    kind: Option<String>,
}

/// Records ready to export, in order within each stream.
#[derive(Debug, Default)]
pub struct Batch {
    /// The records.
    pub records: Vec<Outgoing>,
    positions: Vec<Pos>,
    bytes: usize,
}

impl Batch {
    /// Whether there is nothing to ship.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }
}

/// Follows one log directory for one exporter.
#[derive(Debug)]
pub struct Tailer {
    dir: PathBuf,
    cursor_path: PathBuf,
    cursor: Cursor,
    limits: TailLimits,
    // Tenants decided but not yet in the cursor (nothing acknowledged).
    tenants: HashMap<String, String>,
    // Round-robin start, so one busy stream cannot starve the others.
    turn: usize,
}

struct ReadLine {
    bytes: Vec<u8>,
    segment: u32,
    end: u64,
}

impl Tailer {
    /// Follows `dir` for the exporter `name`, resuming from its cursor.
    pub fn open(dir: &Path, name: &str, limits: TailLimits) -> Result<Tailer> {
        if !dir.is_dir() {
            return Err(Error::new(format!(
                "{} is not a log directory",
                dir.display()
            )));
        }
        let cursor_path = Cursor::path(dir, name);
        let cursor = Cursor::load(&cursor_path, name)?;
        Ok(Tailer {
            dir: dir.to_path_buf(),
            cursor_path,
            cursor,
            limits: TailLimits {
                max_records: limits.max_records.max(1),
                max_bytes: limits.max_bytes.max(1),
            },
            tenants: HashMap::new(),
            turn: 0,
        })
    }

    /// The cursor as last persisted.
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// The cursor file.
    pub fn cursor_path(&self) -> &Path {
        &self.cursor_path
    }

    fn stream_ids(&self) -> Result<Vec<String>> {
        let rd = fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("cannot list {}", self.dir.display()), e))?;
        let mut ids = Vec::new();
        for entry in rd.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            if self.cursor.streams.get(&name).is_some_and(|c| c.closed) {
                continue;
            }
            ids.push(name);
        }
        ids.sort();
        Ok(ids)
    }

    /// The next records to ship: from each followed stream, the whole
    /// lines after its cursor, up to the batch limits.
    pub fn next_batch(&mut self) -> Result<Batch> {
        let ids = self.stream_ids()?;
        let mut batch = Batch::default();
        if ids.is_empty() {
            return Ok(batch);
        }
        self.turn = self.turn.wrapping_add(1);
        let start = self.turn % ids.len();
        for k in 0..ids.len() {
            let Some(id) = ids.get((start + k) % ids.len()) else {
                continue;
            };
            let room_records = self.limits.max_records - batch.len();
            let room_bytes = self.limits.max_bytes.saturating_sub(batch.bytes);
            if room_records == 0 || room_bytes == 0 {
                break;
            }
            self.add_stream(id, room_records, room_bytes, &mut batch)?;
        }
        Ok(batch)
    }

    fn add_stream(
        &mut self,
        id: &str,
        room_records: usize,
        room_bytes: usize,
        batch: &mut Batch,
    ) -> Result<()> {
        let cur = self.cursor.streams.get(id).cloned().unwrap_or_default();
        let lines = read_lines(
            &self.dir.join(id),
            cur.segment,
            cur.offset,
            room_records,
            room_bytes,
        )?;
        if lines.is_empty() {
            return Ok(());
        }
        let known = cur.tenant.clone().or_else(|| self.tenants.get(id).cloned());
        // Once the tenant is known only seq and kind are needed: a byte
        // scan finds them; the full parse is for the first lines (and for
        // any line the scan does not understand).
        let infos: Vec<_> = lines
            .iter()
            .map(|l| match (&known, seq_and_kind(&l.bytes)) {
                (Some(_), Some((seq, kind))) => Some(RecordInfo {
                    stream_id: None,
                    seq: Some(seq),
                    kind: matches!(kind, "stream_end" | "checkpoint").then(|| kind.to_string()),
                    partition: None,
                }),
                _ => record_info(&l.bytes),
            })
            .collect();
        let tenant = match known {
            Some(t) => t,
            None => {
                let mut decided = None;
                for info in infos.iter().flatten() {
                    if let Some(p) = &info.partition {
                        decided = Some(p.tenant.clone());
                        break;
                    }
                    if info.kind.as_deref() == Some("stream_end") {
                        decided = Some(UNKNOWN.to_string());
                        break;
                    }
                }
                match decided {
                    Some(t) => t,
                    // Hold the stream's first lines until a record names
                    // the tenant, within bounds.
                    None if lines.len() < HOLD_LIMIT.min(self.limits.max_records) => {
                        return Ok(());
                    }
                    None => UNKNOWN.to_string(),
                }
            }
        };
        self.tenants.insert(id.to_string(), tenant.clone());
        for (i, (line, info)) in lines.into_iter().zip(infos).enumerate() {
            let seq = info
                .as_ref()
                .and_then(|i| i.seq)
                .unwrap_or(cur.next_seq + i as u64);
            batch.bytes += line.bytes.len();
            batch.records.push(Outgoing {
                stream_id: id.to_string(),
                seq,
                tenant: tenant.clone(),
                msg_id: format!("{id}:{seq}"),
                line: line.bytes,
            });
            batch.positions.push(Pos {
                segment: line.segment,
                end: line.end,
                kind: info.and_then(|i| i.kind),
            });
        }
        Ok(())
    }

    /// Records that the first `delivered` records of `batch` were
    /// acknowledged, and persists the cursor.
    pub fn commit(&mut self, batch: &Batch, delivered: usize) -> Result<()> {
        if delivered == 0 {
            return Ok(());
        }
        for (rec, pos) in batch.records.iter().zip(&batch.positions).take(delivered) {
            let cur = self
                .cursor
                .streams
                .entry(rec.stream_id.clone())
                .or_default();
            cur.segment = pos.segment;
            cur.offset = pos.end;
            cur.next_seq = rec.seq + 1;
            cur.tenant = Some(rec.tenant.clone());
            match pos.kind.as_deref() {
                Some("stream_end") => cur.ended = true,
                Some("checkpoint") if cur.ended => cur.closed = true,
                _ => {}
            }
        }
        self.cursor.save(&self.cursor_path)
    }
}

/// Reads whole lines of a stream from (`segment`, `offset`), moving to
/// the next segment once it exists (then the current one is complete).
fn read_lines(
    dir: &Path,
    mut segment: u32,
    mut offset: u64,
    max_records: usize,
    max_bytes: usize,
) -> Result<Vec<ReadLine>> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    loop {
        let path = dir.join(segment_file_name(segment));
        // Looked at before reading: if the next segment exists now, the
        // writer had finished this one, so reading it to the end is final.
        let next_exists = dir
            .join(segment_file_name(segment.saturating_add(1)))
            .exists();
        let Some((data, eof)) = read_from(&path, offset, max_bytes.saturating_sub(bytes))? else {
            return Ok(out);
        };
        let mut start = 0usize;
        while let Some(nl) = data
            .get(start..)
            .and_then(memchr_newline)
            .map(|i| start + i)
        {
            let line = data.get(start..nl).unwrap_or_default().to_vec();
            bytes += line.len() + 1;
            out.push(ReadLine {
                bytes: line,
                segment,
                end: offset + nl as u64 + 1,
            });
            start = nl + 1;
            if out.len() >= max_records || bytes >= max_bytes {
                return Ok(out);
            }
        }
        if !eof || !next_exists {
            // Stopped by the budget, or at the live end of the stream: a
            // torn last line is left until the writer completes it.
            return Ok(out);
        }
        let rest = data.get(start..).unwrap_or_default();
        if !rest.is_empty() {
            // A finished segment that does not end in a newline: not what
            // the writer leaves. Ship the bytes as they are; the collector's
            // verifier names the damage.
            out.push(ReadLine {
                bytes: rest.to_vec(),
                segment,
                end: offset + data.len() as u64,
            });
        }
        segment = segment.saturating_add(1);
        offset = 0;
    }
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    b.iter().position(|c| *c == b'\n')
}

/// Reads from `offset` up to `limit` bytes, and further until a newline
/// when there is none in the first `limit` (a record longer than the
/// budget). `None` when the file does not exist (yet). The flag says
/// whether the end of the file was reached.
fn read_from(path: &Path, offset: u64, limit: usize) -> Result<Option<(Vec<u8>, bool)>> {
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("cannot open {}", path.display()), e)),
    };
    let err = |e| Error::io(format!("cannot read {}", path.display()), e);
    f.seek(SeekFrom::Start(offset)).map_err(err)?;
    let mut data = Vec::new();
    let mut want = limit.max(4096);
    loop {
        let before = data.len();
        let got = (&mut f)
            .take(want as u64)
            .read_to_end(&mut data)
            .map_err(err)?;
        let eof = got < want;
        if eof || data.get(before..).is_some_and(|d| d.contains(&b'\n')) {
            return Ok(Some((data, eof)));
        }
        want = want.saturating_mul(2);
    }
}
