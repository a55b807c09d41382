//! The persisted cursor of one exporter: per stream, where the next line
//! to ship starts and what was acknowledged last. Kept in the log
//! directory as `.ship-cursor.<exporter>.json` and replaced atomically
//! (temporary file, fsync, rename), so a restarted shipper resumes where
//! the receiver last acknowledged.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::record::partition_token;

/// Where one stream stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamCursor {
    /// Segment index of the next line to ship.
    pub segment: u32,
    /// Byte offset of the next line to ship in that segment.
    pub offset: u64,
    /// Seq after the last acknowledged record (= records acknowledged).
    pub next_seq: u64,
    /// The tenant token the stream's records are published under, once
    /// decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The stream's `stream_end` was acknowledged.
    #[serde(default)]
    pub ended: bool,
    /// The checkpoint after `stream_end` was acknowledged: nothing more
    /// will come, the stream is no longer followed.
    #[serde(default)]
    pub closed: bool,
}

/// The cursor of one exporter over one log directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Exporter name.
    pub exporter: String,
    /// Per stream id.
    pub streams: BTreeMap<String, StreamCursor>,
}

impl Cursor {
    /// The cursor file of exporter `name` in `log_dir`.
    pub fn path(log_dir: &Path, name: &str) -> PathBuf {
        log_dir.join(format!(".ship-cursor.{}.json", partition_token(name)))
    }

    /// Loads a cursor file; a missing file is a fresh cursor.
    pub fn load(path: &Path, name: &str) -> Result<Cursor> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::with_source(format!("cursor file {} is damaged", path.display()), e)
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Cursor {
                exporter: name.to_string(),
                streams: BTreeMap::new(),
            }),
            Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
        }
    }

    /// Writes the cursor atomically: a crash leaves the old or the new
    /// file, never a torn one.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::with_source("cannot serialize the cursor", e))?;
        let tmp = path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_data()?;
            fs::rename(&tmp, path)?;
            if let Some(dir) = path.parent()
                && let Ok(d) = fs::File::open(dir)
            {
                let _ = d.sync_all();
            }
            Ok(())
        };
        write().map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = Cursor::path(dir.path(), "nats");
        assert!(path.ends_with(".ship-cursor.nats.json"));
        let mut c = Cursor::load(&path, "nats").unwrap();
        assert!(c.streams.is_empty());
        c.streams.insert(
            "s1".into(),
            StreamCursor {
                segment: 2,
                offset: 77,
                next_seq: 9,
                tenant: Some("acme".into()),
                ended: false,
                closed: false,
            },
        );
        c.save(&path).unwrap();
        assert_eq!(Cursor::load(&path, "nats").unwrap(), c);
        assert!(!path.with_extension("json.tmp").exists());
        fs::write(&path, b"{torn").unwrap();
        assert!(Cursor::load(&path, "nats").is_err());
    }
}
