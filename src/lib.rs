//! mailtls: safe, self-recovering STARTTLS and implicit TLS for C mail and news
//! software, on rustls. See DESIGN.md for the architecture; this file is the module map.

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod ffi;
pub mod protocol;
pub mod recovery;
pub mod session;
pub mod tls;
