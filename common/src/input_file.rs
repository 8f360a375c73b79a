//! Reading a file a user names (a workflow, a manifest) with a bound before
//! anything parses it: regular files only, the size checked from the
//! metadata first and again by a read that stops one byte past the limit.
//!
//! A device (`/dev/zero`), a FIFO or a directory is refused without being
//! read, and a FIFO is never opened for a blocking read, so neither can
//! exhaust memory nor hang the reader. Must not: parse; the caller names the
//! file and the limit, and turns the error into its own message.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why a file a user named cannot be read as input.
#[derive(Debug, thiserror::Error)]
pub enum InputFileError {
    #[error("{}", io_reason(.0))]
    Io(#[from] io::Error),
    #[error("not a regular file (it is {0})")]
    NotRegular(&'static str),
    #[error("file is {len_bytes} bytes, more than the limit of {max_bytes}")]
    TooLarge { len_bytes: u64, max_bytes: usize },
    #[error("not UTF-8 text")]
    NotText,
}

/// The part of an I/O error a user acts on.
fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// What a file that is not a regular file is, in words.
fn kind_of(meta: &std::fs::Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

/// Checks what `meta` describes: a regular file of at most `max_bytes`.
fn check(meta: &std::fs::Metadata, max_bytes: usize) -> Result<(), InputFileError> {
    if let Some(kind) = kind_of(meta) {
        return Err(InputFileError::NotRegular(kind));
    }
    if meta.len() > max_bytes as u64 {
        return Err(InputFileError::TooLarge {
            len_bytes: meta.len(),
            max_bytes,
        });
    }
    Ok(())
}

/// The text of the regular file at `path` (symlinks followed), at most
/// `max_bytes` long.
pub fn read_input_file(path: &Path, max_bytes: usize) -> Result<String, InputFileError> {
    check(&std::fs::metadata(path)?, max_bytes)?;
    // Non-blocking: a FIFO swapped in after the check opens without waiting
    // for a writer, and the check of the open file below refuses it.
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    check(&file.metadata()?, max_bytes)?;
    // The file may have grown since: read one byte past the limit to know.
    let mut bytes = Vec::new();
    file.take(max_bytes as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > max_bytes {
        return Err(InputFileError::TooLarge {
            len_bytes: bytes.len() as u64,
            max_bytes,
        });
    }
    String::from_utf8(bytes).map_err(|_| InputFileError::NotText)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_regular_file_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.yaml");
        std::fs::write(&path, "workflow: w\n").unwrap();
        assert_eq!(read_input_file(&path, 12).unwrap(), "workflow: w\n");
        let err = read_input_file(&path, 11).unwrap_err();
        assert_eq!(
            err.to_string(),
            "file is 12 bytes, more than the limit of 11"
        );
    }

    /// Regression (issue 12, defect 6): `/dev/zero` was read until the OOM
    /// killer and a FIFO hung the reader; both are refused unread.
    #[test]
    fn devices_fifos_and_directories_are_refused_unread() {
        let err = read_input_file(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not a regular file (it is a character device)"
        );

        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = read_input_file(&fifo, 1 << 20).unwrap_err();
        assert_eq!(err.to_string(), "not a regular file (it is a FIFO)");

        let err = read_input_file(dir.path(), 1 << 20).unwrap_err();
        assert_eq!(err.to_string(), "not a regular file (it is a directory)");

        let err = read_input_file(&dir.path().join("missing"), 1 << 20).unwrap_err();
        assert_eq!(err.to_string(), "no such file");
    }

    #[test]
    fn binary_content_is_not_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(
            read_input_file(&path, 10).unwrap_err().to_string(),
            "not UTF-8 text"
        );
    }
}
