//! The offline cache: one file per product under the OS's data directory, holding the last verdict
//! exactly as signed, the keys it was verified with, and the latest moment seen. Written atomically
//! (a temporary file in the same directory, then a rename). Everything read back is untrusted until
//! the verdict verifies again; a file that does not parse, or whose verdict does not verify, is
//! discarded.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const CACHE_FORMAT: &str = "keygate-client-cache/1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheFile {
    pub format: String,
    pub product: String,
    /// The license key the verdict is for (not signed: a changed key only fails the next check).
    pub license_key: Option<String>,
    pub hardware_id: String,
    /// The last verdict, exactly as signed.
    pub token: String,
    /// The ids of the keys trusted when it was saved (informational: a key listed here is never
    /// trusted unless the app trusts it anyway).
    pub key_ids: Vec<String>,
    /// The latest moment this license was seen (Unix seconds). Editable, so never taken below the
    /// verdict's `iat`.
    pub high_water: i64,
}

/// Where one product's cache lives.
#[derive(Debug, Clone)]
pub struct CacheStore {
    path: PathBuf,
}

impl CacheStore {
    pub fn new(dir: &Path, product: &str) -> Self {
        // Product names are letters, digits, '.', '_' and '-' (the server refuses others).
        let name: String =
            product.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
        Self { path: dir.join(format!("{name}.license.json")) }
    }

    /// The OS's application data directory for Keygate licenses (e.g. `~/.local/share/keygate` on
    /// Linux, `~/Library/Application Support/dev.keygate.keygate` on macOS, `%APPDATA%` on Windows).
    pub fn default_dir() -> Result<PathBuf> {
        directories::ProjectDirs::from("dev", "keygate", "keygate")
            .map(|dirs| dirs.data_dir().to_path_buf())
            .ok_or_else(|| Error::Config("no home directory for the license cache; set one with cache_dir".into()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn storage(&self, source: std::io::Error) -> Error {
        Error::Storage { path: self.path.display().to_string(), source }
    }

    /// The saved file, if any. One that does not parse is removed and reported as corrupt.
    pub fn load(&self) -> Result<Option<CacheFile>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(self.storage(err)),
        };
        match serde_json::from_str::<CacheFile>(&text) {
            Ok(file) if file.format == CACHE_FORMAT => Ok(Some(file)),
            Ok(file) => self.discard(format!("unknown format {}", file.format)),
            Err(err) => self.discard(err.to_string()),
        }
    }

    /// Removes a file that cannot be trusted, and says so.
    pub fn discard<T>(&self, why: String) -> Result<T> {
        self.remove()?;
        Err(Error::CacheCorrupt(why))
    }

    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(self.storage(err)),
            _ => Ok(()),
        }
    }

    /// Writes the file whole or not at all: a temporary file beside it, then a rename. (Not
    /// fsync'ed: after a power loss the cache may be the previous verdict, or lost and discarded,
    /// which costs an online check, never trust.)
    pub fn save(&self, file: &CacheFile) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.storage(e))?;
        let mut temporary = tempfile::NamedTempFile::new_in(dir).map_err(|e| self.storage(e))?;
        let text = serde_json::to_vec_pretty(file).map_err(|e| Error::Config(e.to_string()))?;
        temporary.write_all(&text).map_err(|e| self.storage(e))?;
        temporary.persist(&self.path).map_err(|e| self.storage(e.error))?;
        Ok(())
    }
}
