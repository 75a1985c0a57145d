//! Transports the C side provides: callbacks with userdata, or a plain file descriptor
//! that the library reads, writes and polls itself with the step timeout; and the
//! connector that opens the client's retry connections through the C program's callbacks.

use std::cell::Cell;
use std::ffi::{c_char, c_void};
use std::io;
use std::rc::Rc;
use std::time::Instant;

use super::cstring;
use crate::session::{Connector, Transport};

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
    /// The last read filled its buffer, so more is probably queued: try the next one
    /// at once instead of polling first (a stream of records, not a dialogue).
    eager: bool,
    /// A pipe or file rather than a socket: poll, then read or writev.
    not_socket: bool,
}

impl FdTransport {
    pub(crate) fn new(fd: i32) -> Self {
        FdTransport { fd, deadline: None, eager: false, not_socket: false }
    }
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
                // poll's milliseconds are rounded down: the deadline itself decides.
                continue;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Transport for FdTransport {
    /// Polls (with the step's deadline), then reads. After a read that filled its
    /// buffer the next one is tried first without waiting (MSG_DONTWAIT on a socket),
    /// which saves a poll per record in a stream of data and costs nothing in a
    /// dialogue, where replies are short.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.eager && !self.not_socket {
            // SAFETY: `buf` is valid for `buf.len()` writable bytes.
            let n = unsafe { libc::recv(self.fd, buf.as_mut_ptr() as *mut c_void, buf.len(), libc::MSG_DONTWAIT) };
            if n >= 0 {
                self.eager = n as usize == buf.len();
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOTSOCK) => self.not_socket = true,
                Some(libc::EAGAIN) | Some(libc::EINTR) => {}
                _ => return Err(e),
            }
        }
        self.wait(libc::POLLIN)?;
        // SAFETY: `buf` is valid for `buf.len()` writable bytes.
        let n = unsafe { libc::read(self.fd, buf.as_mut_ptr() as *mut c_void, buf.len()) };
        if n < 0 {
            self.eager = false;
            return Err(io::Error::last_os_error());
        }
        self.eager = n as usize == buf.len() && !buf.is_empty();
        Ok(n as usize)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    /// One gathering write for a whole flight. A socket is tried at once
    /// (MSG_DONTWAIT, whatever the descriptor's own mode) and polled only when full:
    /// a write almost always fits, and the poll would be one more system call per
    /// record. MSG_NOSIGNAL keeps a closed peer from killing the process with SIGPIPE;
    /// a pipe (not a socket) is polled, then written with writev.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let bufs = &bufs[..bufs.len().min(libc::UIO_MAXIOV as usize)];
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        loop {
            if self.not_socket {
                self.wait(libc::POLLOUT)?;
                // SAFETY: writev reads `bufs.len()` iovecs, the layout of IoSlices,
                // which outlive the call.
                let n = unsafe { libc::writev(self.fd, bufs.as_ptr() as *const libc::iovec, bufs.len() as libc::c_int) };
                return if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) };
            }
            // SAFETY: an all-zero msghdr is valid; it then points at `bufs`, whose
            // IoSlices have the layout of iovec and outlive the call.
            let n = unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
                msg.msg_iovlen = bufs.len() as _;
                libc::sendmsg(self.fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOTSOCK) => self.not_socket = true,
                Some(libc::EINTR) => continue,
                // Full: wait for room until the step's deadline, then try again.
                Some(libc::EAGAIN) => self.wait(libc::POLLOUT)?,
                _ => return Err(e),
            }
        }
    }

    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }
}

/// How the session reaches its peer: not yet, through callbacks, or through a file
/// descriptor (in `mailtls_session.fd`).
#[derive(Clone, Copy)]
pub(super) enum IoMode {
    None,
    Callbacks(CallbackTransport),
    Fd,
}

#[derive(Clone, Copy)]
pub(super) struct ConnectorCallbacks {
    pub(super) connect: extern "C" fn(*mut c_void, *const c_char, u16, *mut i32) -> i32,
    pub(super) close: Option<extern "C" fn(*mut c_void, i32)>,
    pub(super) userdata: *mut c_void,
}

/// Opens new connections through the C program's callbacks.
pub(super) struct FfiConnector {
    pub(super) cb: ConnectorCallbacks,
    pub(super) io: IoMode,
    pub(super) fd: Rc<Cell<i32>>,
}

impl Connector for FfiConnector {
    fn connect(&mut self, host: &str, port: u16) -> std::io::Result<Box<dyn Transport>> {
        let h = cstring(host);
        let mut fd: i32 = -1;
        let rc = (self.cb.connect)(self.cb.userdata, h.as_ptr(), port, &mut fd);
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        match self.io {
            IoMode::Fd => {
                if fd < 0 {
                    return Err(std::io::Error::other("the connect callback gave no file descriptor"));
                }
                self.fd.set(fd);
                Ok(Box::new(FdTransport::new(fd)))
            }
            IoMode::Callbacks(t) => {
                self.fd.set(fd);
                Ok(Box::new(t))
            }
            IoMode::None => Err(std::io::Error::other("no I/O set")),
        }
    }

    fn close(&mut self) {
        if let Some(close) = self.cb.close {
            close(self.cb.userdata, self.fd.get());
        }
        self.fd.set(-1);
    }
}
