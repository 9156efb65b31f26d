//! The data directory holds customers' personal data and the catalogue's key hashes: only the
//! account that runs Cohort may read it. The directory is made `0700` and the store's files
//! `0600` whenever a store opens it (an older, wider directory is narrowed, with a log line);
//! the binary also sets the process's umask with [`keep_new_files_private`], so files that
//! other parts create (lake files, locks, exports into the directory) start private too.

use crate::StoreError;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and its parents) private, or narrows an existing one.
pub(crate) fn private_dir(dir: &Path) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io)?;
    narrow(dir, DIR_MODE).map_err(io)
}

/// Narrows a file the store created (a SQLite database; SQLite gives its `-wal` and `-shm`
/// files the database's own mode).
pub(crate) fn private_file(path: &Path) -> Result<(), StoreError> {
    narrow(path, FILE_MODE).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn narrow(path: &Path, mode: u32) -> std::io::Result<()> {
    let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if current & !mode != 0 {
        tracing::info!(
            path = %path.display(),
            "narrowing permissions from {current:o} to {mode:o}: the data directory is private"
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Makes every file and directory this process creates from now on private to its account
/// (umask 077). For the binary's `main`: the umask is process-wide.
pub fn keep_new_files_private() {
    // SAFETY: umask only sets the process's file-mode creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_directory_is_private_and_a_wide_one_is_narrowed() {
        let root = tempfile::tempdir().unwrap();
        let fresh = root.path().join("a/b");
        private_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);

        let wide = root.path().join("wide");
        std::fs::create_dir(&wide).unwrap();
        std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&wide).unwrap();
        assert_eq!(mode(&wide), 0o700);

        let file = wide.join("state.db");
        std::fs::write(&file, b"").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
    }
}
