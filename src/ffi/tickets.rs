//! Session ticket keys for the server's config: the caller's own keys, or a key file,
//! so that servers started apart (other processes, other hosts, a restarted master)
//! open each other's tickets. Apart from config.rs so that file stays a size a reader
//! takes in; the logic is the config's (`ConfigBuilder::ticket_keys`), this converts.

use std::ffi::c_char;

use super::config::{builder, mailtls_config_builder};
use super::{byte_slice, c_str, ffi_guard, mailtls_result, non_null};

/// Server: the session ticket keys, so that servers whose configs are built apart
/// (other processes, other hosts, a restarted master) resume each other's TLS
/// sessions; without them each config draws a random secret when it is built, which
/// only the processes forked after that share. Tickets are issued under `current` and
/// opened under `current` or `previous` (the key before the last rotation; NULL or
/// length 0: none); a ticket under any other key is not resumed, and the handshake is
/// a full one. Each key is 32 to 64 bytes of secret (`MAILTLS_RESULT_INVALID_PARAMETER`
/// otherwise, detail in `mailtls_config_builder_last_error`), from a random source
/// such as `openssl rand 32`. Anyone who has a key can decrypt the resumption secrets
/// of every ticket issued under it: keep it as secret as the private key and rotate it
/// (daily, say: a new `current`, the old one as `previous`). The bytes are copied;
/// the library zeroes its copy when it is done with it. Server role only: a client
/// builder gives `MAILTLS_RESULT_INVALID_PARAMETER`. Replaces a key file set before.
#[no_mangle]
pub extern "C" fn mailtls_config_builder_set_ticket_keys(
    b: *mut mailtls_config_builder,
    current: *const u8,
    current_len: usize,
    previous: *const u8,
    previous_len: usize,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(b, mailtls_result::NullParameter);
        non_null!(current, mailtls_result::NullParameter);
        // SAFETY: the caller provides `current_len` and `previous_len` readable bytes.
        let (cur, prev) = match unsafe { (byte_slice(current, current_len), byte_slice(previous, previous_len)) } {
            (Ok(c), Ok(p)) => (c, if p.is_empty() { None } else { Some(p) }),
            (Err(e), _) | (_, Err(e)) => return e,
        };
        let bl = builder(b);
        let r = bl.inner.ticket_keys(cur, prev).map(|_| ());
        bl.outcome(r)
    })
}

/// Server: the session ticket keys of `mailtls_config_builder_set_ticket_keys`, from
/// a key file. The file is text: one key per line in hex, 64 to 128 hex digits (32 to
/// 64 bytes; `openssl rand -hex 32` makes one); the first key line is the current
/// key, a second one, optional, the previous key; blank lines and lines starting with
/// `#` are ignored; a key line holds nothing but the key. The file must be its owner's
/// alone, no permission for group or others (0600 or 0400), as ssh asks of a private
/// key. It is read now, and a file
/// that cannot be read, is open to group or others, or is malformed gives
/// `MAILTLS_RESULT_TICKET_KEY_LOAD`, with the file and the mode or the line named in
/// `mailtls_config_builder_last_error` (the key itself never is); it is read again
/// each time the config is built, so a server that rebuilds its config after rotating
/// the file (a reload) gets the new keys. Server role only: a client builder gives
/// `MAILTLS_RESULT_INVALID_PARAMETER`. Replaces keys set before.
#[no_mangle]
pub extern "C" fn mailtls_config_builder_set_ticket_key_file(b: *mut mailtls_config_builder, path: *const c_char) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(b, mailtls_result::NullParameter);
        // SAFETY: NUL-terminated string or NULL (checked).
        let path = match unsafe { c_str(path) } {
            Ok(p) => p,
            Err(e) => return e,
        };
        let bl = builder(b);
        let r = bl.inner.ticket_key_file(path).map(|_| ());
        bl.outcome(r)
    })
}
