//! Transports the C side provides: callbacks with userdata, or a plain file descriptor
//! that the library reads, writes and polls itself with the step timeout.

use std::ffi::c_void;
use std::io;
use std::time::Instant;

use crate::session::Transport;

/// Reads up to `len` bytes into `buf`; stores the count in `*out_n` and returns 0, or
/// returns an errno (`EAGAIN`/`EWOULDBLOCK`: no data now; `ETIMEDOUT`: timed out).
/// End of stream is 0 with `*out_n == 0`.
pub type mailtls_read_callback =
    Option<extern "C" fn(userdata: *mut c_void, buf: *mut u8, len: usize, out_n: *mut usize) -> i32>;

/// Writes up to `len` bytes from `buf`; stores the count taken in `*out_n` and returns
/// 0, or returns an errno (`EAGAIN`/`EWOULDBLOCK`: cannot take data now).
pub type mailtls_write_callback =
    Option<extern "C" fn(userdata: *mut c_void, buf: *const u8, len: usize, out_n: *mut usize) -> i32>;

/// The C program's callbacks.
#[derive(Clone, Copy)]
pub(crate) struct CallbackTransport {
    pub read: extern "C" fn(*mut c_void, *mut u8, usize, *mut usize) -> i32,
    pub write: extern "C" fn(*mut c_void, *const u8, usize, *mut usize) -> i32,
    pub userdata: *mut c_void,
}

impl Transport for CallbackTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0usize;
        let rc = (self.read)(self.userdata, buf.as_mut_ptr(), buf.len(), &mut n);
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if n > buf.len() {
            return Err(io::Error::other(format!("read callback claimed {n} bytes of a {}-byte buffer", buf.len())));
        }
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut n = 0usize;
        let rc = (self.write)(self.userdata, buf.as_ptr(), buf.len(), &mut n);
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if n > buf.len() {
            return Err(io::Error::other(format!("write callback claimed {n} bytes of {}", buf.len())));
        }
        Ok(n)
    }
}

/// A socket or pipe the library drives itself: poll with the step deadline, then
/// read or write. The descriptor stays the caller's (never closed here).
pub(crate) struct FdTransport {
    pub fd: i32,
    pub deadline: Option<Instant>,
}

impl FdTransport {
    fn wait(&self, events: libc::c_short) -> io::Result<()> {
        loop {
            let timeout_ms: libc::c_int = match self.deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT));
                    }
                    left.as_millis().min(i32::MAX as u128).max(1) as libc::c_int
                }
            };
            let mut pfd = libc::pollfd { fd: self.fd, events, revents: 0 };
            // SAFETY: one valid pollfd on the stack.
            let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
            if rc > 0 {
                return Ok(());
            }
            if rc == 0 {
                return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Transport for FdTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.wait(libc::POLLIN)?;
        // SAFETY: `buf` is valid for `buf.len()` writable bytes.
        let n = unsafe { libc::read(self.fd, buf.as_mut_ptr() as *mut c_void, buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.wait(libc::POLLOUT)?;
        // SAFETY: `buf` is valid for `buf.len()` readable bytes. MSG_NOSIGNAL keeps a
        // closed peer from killing the process with SIGPIPE; a pipe falls back to write.
        let n = unsafe { libc::send(self.fd, buf.as_ptr() as *const c_void, buf.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOTSOCK) {
                // SAFETY: as above.
                let n = unsafe { libc::write(self.fd, buf.as_ptr() as *const c_void, buf.len()) };
                return if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) };
            }
            return Err(e);
        }
        Ok(n as usize)
    }

    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }
}
