//! The few system calls std does not wrap. Each is a small function with its safety argument.
#![allow(unsafe_code)]

use std::io;

/// Raises the soft limit on open files to the hard limit. Returns `(soft before, hard)`.
///
/// A gateway holds one descriptor per connection, and distributions start processes with a soft
/// limit of 1024 while allowing far more: without this, the 1025th connection fails with EMFILE.
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit read just above; setrlimit only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((before, limit.rlim_max))
}
