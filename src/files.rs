//! Reading the files an operator points the exporter at (token files, the client secret,
//! the notification secret, the web configuration) with the same guards: bounded, never
//! blocking on a FIFO, never following a swap between the check and the read.

use crate::secret::Secret;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Token files larger than this are refused unread: a real one is under 1 KiB, and reading
/// an unbounded file (`/dev/zero`, a log pointed at by mistake) would grow memory for good.
pub const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

/// Reads at most `limit` bytes of the regular file at `path`, without ever blocking on it:
/// it is opened non-blocking (a FIFO with no writer would block the open, and then the
/// read, of an async worker holding the token lock) and checked with `fstat` on the opened
/// descriptor, so that it cannot be swapped between the check and the read. Also returns
/// its permission bits.
pub fn read_regular_file(path: &Path, limit: u64) -> Result<(Vec<u8>, u32), ReadRefusal> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(ReadRefusal::Io)?;
    let meta = file.metadata().map_err(ReadRefusal::Io)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        return Err(ReadRefusal::NotAFile(if kind.is_fifo() {
            "a FIFO (named pipe)"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        }));
    }
    if meta.len() > limit {
        return Err(ReadRefusal::TooLarge);
    }
    // The size may change after the fstat: never read more than one byte past the limit.
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadRefusal::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadRefusal::TooLarge);
    }
    Ok((bytes, meta.permissions().mode()))
}

/// Why [`read_regular_file`] gave no content.
#[derive(Debug)]
pub enum ReadRefusal {
    Io(io::Error),
    NotAFile(&'static str),
    TooLarge,
}

/// Reads a secret from a file as container secrets are mounted: one value, perhaps followed
/// by a newline.
pub fn read_secret_file(path: &Path) -> std::io::Result<Secret> {
    // Bounded and non-blocking like the token file: a FIFO or /dev/zero mounted as the
    // secret must not hang or fill the process at start.
    let bytes = match read_regular_file(path, MAX_TOKEN_FILE_BYTES) {
        Ok((bytes, _)) => bytes,
        Err(ReadRefusal::Io(e)) => return Err(e),
        Err(ReadRefusal::NotAFile(kind)) => {
            return Err(std::io::Error::other(format!(
                "it is {kind}, not a regular file"
            )));
        }
        Err(ReadRefusal::TooLarge) => {
            return Err(std::io::Error::other(format!(
                "it is larger than {MAX_TOKEN_FILE_BYTES} bytes"
            )));
        }
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8"))?;
    Ok(Secret::new(text.trim_end_matches(['\n', '\r']).trim()))
}
