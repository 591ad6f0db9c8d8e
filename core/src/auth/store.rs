//! Where cached tokens live: in memory (default) or in a file shared by several processes and by
//! notebook restarts. The file is written atomically (temp file + rename) with mode 0600, and a
//! sibling `.lock` file held with an OS lock makes processes take turns, so two processes sharing
//! one file make one token request between them. Entries are keyed by a keyed hash (with a salt
//! kept in the file) of the flow, URL, client, user, scopes and secrets.
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Token;
use crate::error::{Error, Result};

/// Where a flow keeps its token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TokenStore {
    /// In this process only.
    #[default]
    Memory,
    /// In this JSON file (mode 0600), shared by every process that names it.
    File(PathBuf),
}

impl TokenStore {
    pub fn file(path: impl Into<PathBuf>) -> Self {
        TokenStore::File(path.into())
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct StoreFile {
    pub version: u32,
    #[serde(with = "hex_bytes")]
    pub salt: Vec<u8>,
    pub entries: HashMap<String, Token>,
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::super::cache::hex(b))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        (0..s.len())
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(s.get(i..i + 2).unwrap_or("x"), 16)
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

pub(crate) struct FileStore {
    path: PathBuf,
    lock_path: PathBuf,
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::config(format!(
        "token store {}: cannot {what}: {e}",
        path.display()
    ))
}

fn open_private(path: &Path, truncate: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(truncate);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

impl FileStore {
    pub(crate) fn open(path: &Path) -> Result<FileStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io_err(path, "create its folder", e))?;
        }
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        Ok(FileStore {
            path: path.to_owned(),
            lock_path: lock_path.into(),
        })
    }

    /// Blocks until this process holds the store's lock; released when the file is dropped.
    pub(crate) fn lock(&self) -> Result<File> {
        let f = open_private(&self.lock_path, false)
            .map_err(|e| io_err(&self.path, "open the lock file", e))?;
        f.lock().map_err(|e| io_err(&self.path, "lock", e))?;
        Ok(f)
    }

    pub(crate) fn try_lock(&self) -> Result<Option<File>> {
        let f = open_private(&self.lock_path, false)
            .map_err(|e| io_err(&self.path, "open the lock file", e))?;
        match f.try_lock() {
            Ok(()) => Ok(Some(f)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(io_err(&self.path, "lock", e)),
        }
    }

    /// The store's content; a missing or unreadable file is an empty store with a new salt.
    pub(crate) fn read(&self) -> Result<StoreFile> {
        match std::fs::read(&self.path) {
            Ok(bytes) => match serde_json::from_slice::<StoreFile>(&bytes) {
                Ok(f) if f.version == 1 && !f.salt.is_empty() => Ok(f),
                _ => {
                    tracing::warn!(path = %self.path.display(), "token store is not readable; starting it afresh");
                    Ok(Self::empty())
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::empty()),
            Err(e) => Err(io_err(&self.path, "read", e)),
        }
    }

    fn empty() -> StoreFile {
        StoreFile {
            version: 1,
            salt: rand::random::<[u8; 32]>().to_vec(),
            entries: HashMap::new(),
        }
    }

    /// Writes atomically: a private temp file in the same folder, fsync, rename.
    pub(crate) fn write(&self, file: &StoreFile) -> Result<()> {
        let bytes =
            serde_json::to_vec(file).map_err(|e| Error::config(format!("token store: {e}")))?;
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(format!(".tmp{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let mut f = open_private(&tmp, true).map_err(|e| io_err(&self.path, "write", e))?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| io_err(&self.path, "write", e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io_err(&self.path, "replace", e))
    }
}
