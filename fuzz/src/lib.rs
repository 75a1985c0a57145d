//! What the fuzz targets share: the client-dialogue driver and its properties, and the
//! hostile transport of the FFI target. Each target in `fuzz_targets/` is a few lines
//! that call into here, so the properties are written once.

pub mod dialogue;
pub mod ffi;
