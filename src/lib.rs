//! mailtls: safe, self-recovering STARTTLS and implicit TLS for C mail and news
//! software, on rustls. See DESIGN.md for the architecture; this file is the module map.

#![deny(unsafe_code)] // the compiler keeps `unsafe` inside src/ffi, the one module allowed it
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod auth;
pub mod config;
pub mod error;
#[allow(unsafe_code)]
pub mod ffi;
pub mod protocol;
pub mod recovery;
pub mod session;
pub mod tls;
pub mod tlsrpt;
