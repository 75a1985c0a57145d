//! The server side's view of every protocol: which command a line is (and its IMAP
//! tag), which commands require-TLS mode refuses, and the exact reply for each
//! STARTTLS situation. The session applies the rules; the application keeps its own
//! command loop and sends the replies named here.

use super::Proto;

/// A command as the STARTTLS rules see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// The capability request or greeting command: SMTP EHLO/HELO/LHLO, IMAP and
    /// ManageSieve CAPABILITY, POP3 CAPA, NNTP CAPABILITIES.
    Hello,
    /// STARTTLS (POP3: STLS).
    StartTls,
    /// NOOP.
    Noop,
    /// QUIT (IMAP and ManageSieve: LOGOUT).
    Quit,
    /// SMTP and POP3 RSET.
    Rset,
    /// A command that carries credentials: SMTP AUTH, IMAP LOGIN/AUTHENTICATE, POP3
    /// USER/PASS/APOP/AUTH, NNTP AUTHINFO, ManageSieve AUTHENTICATE.
    Auth,
    /// Anything else.
    Other,
}

/// A parsed command line: the command and, for IMAP, its tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// What the command is.
    pub cmd: Command,
    /// The IMAP tag (empty for the other protocols, or when the tag is not a valid one).
    pub tag: String,
}

/// The replies the library names for a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Go ahead with the TLS handshake.
    Go,
    /// TLS cannot start now (no usable certificate or key at this moment).
    Unavailable,
    /// STARTTLS while TLS is active.
    Active,
    /// A command refused because the server requires TLS first.
    Required,
    /// SMTP: a command after STARTTLS before the new EHLO.
    ResetFirst,
    /// STARTTLS after authentication (or otherwise outside its state).
    NotAllowed,
}

/// An IMAP tag (RFC 9051 section 9: astring characters but `+`); None when invalid.
fn imap_tag(word: &str) -> Option<&str> {
    let ok = !word.is_empty()
        && word.len() <= 64
        && word.bytes().all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]+".contains(&b));
    ok.then_some(word)
}

/// Classifies a command line of `proto` (case-insensitive; arguments ignored).
pub fn parse(proto: Proto, line: &[u8]) -> Parsed {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\r', '\n']);
    let mut words = text.split(' ');
    let mut tag = String::new();
    if proto == Proto::Imap {
        tag = imap_tag(words.next().unwrap_or("")).unwrap_or("").to_string();
    }
    let verb = words.next().unwrap_or("").to_ascii_uppercase();
    use Command as C;
    let cmd = match (proto, verb.as_str()) {
        (Proto::Smtp | Proto::Lmtp, "EHLO" | "HELO" | "LHLO") => C::Hello,
        (Proto::Smtp | Proto::Lmtp, "STARTTLS") => C::StartTls,
        (Proto::Smtp | Proto::Lmtp, "AUTH") => C::Auth,
        (Proto::Smtp | Proto::Lmtp | Proto::Pop3, "RSET") => C::Rset,
        (Proto::Smtp | Proto::Lmtp | Proto::Pop3 | Proto::Nntp, "QUIT") => C::Quit,
        (Proto::Imap | Proto::Sieve, "LOGOUT") => C::Quit,
        (Proto::Imap | Proto::Sieve, "CAPABILITY") => C::Hello,
        (Proto::Imap | Proto::Nntp | Proto::Sieve, "STARTTLS") => C::StartTls,
        (Proto::Imap, "LOGIN" | "AUTHENTICATE") => C::Auth,
        (Proto::Pop3, "CAPA") => C::Hello,
        (Proto::Pop3, "STLS") => C::StartTls,
        (Proto::Pop3, "USER" | "PASS" | "APOP" | "AUTH") => C::Auth,
        (Proto::Nntp, "CAPABILITIES") => C::Hello,
        (Proto::Nntp, "AUTHINFO") => C::Auth,
        (Proto::Sieve, "AUTHENTICATE") => C::Auth,
        (_, "NOOP") => C::Noop,
        _ => C::Other,
    };
    Parsed { cmd, tag }
}

/// Whether require-TLS mode lets `cmd` through before TLS. SMTP (RFC 3207 section 4)
/// refuses all but EHLO, STARTTLS, NOOP and QUIT; the other protocols refuse the
/// commands that carry credentials (IMAP LOGINDISABLED, RFC 9051 section 6.2.3; no
/// USER/PASS before STLS; NNTP `483`, RFC 4643 section 2.2; ManageSieve ENCRYPT-NEEDED).
pub fn allowed_before_tls(proto: Proto, cmd: Command) -> bool {
    match proto {
        Proto::Smtp | Proto::Lmtp => matches!(cmd, Command::Hello | Command::StartTls | Command::Noop | Command::Quit),
        _ => cmd != Command::Auth,
    }
}

/// The reply line (with CRLF) for `r` under `proto`; `tag` is the IMAP command's tag.
/// None where the protocol has no such situation.
pub fn reply(proto: Proto, r: Reply, tag: &str) -> Option<String> {
    let tag = if tag.is_empty() { "*" } else { tag };
    let s = match (proto, r) {
        (Proto::Smtp | Proto::Lmtp, Reply::Go) => super::smtp::REPLY_GO.to_string(),
        (Proto::Smtp | Proto::Lmtp, Reply::Unavailable) => super::smtp::REPLY_TLS_UNAVAILABLE.to_string(),
        (Proto::Smtp | Proto::Lmtp, Reply::Active) => super::smtp::REPLY_TLS_ACTIVE.to_string(),
        (Proto::Smtp | Proto::Lmtp, Reply::Required) => super::smtp::REPLY_TLS_REQUIRED.to_string(),
        (Proto::Smtp | Proto::Lmtp, Reply::ResetFirst) => super::smtp::REPLY_EHLO_FIRST.to_string(),
        (Proto::Smtp | Proto::Lmtp, Reply::NotAllowed) => "503 5.5.1 Error: STARTTLS not allowed now\r\n".to_string(),
        (Proto::Imap, Reply::Go) => format!("{tag} OK Begin TLS negotiation now\r\n"),
        (Proto::Imap, Reply::Unavailable) => format!("{tag} NO [UNAVAILABLE] TLS not available right now\r\n"),
        (Proto::Imap, Reply::Active) => format!("{tag} BAD TLS is already active\r\n"),
        (Proto::Imap, Reply::Required) => format!("{tag} NO [PRIVACYREQUIRED] Use STARTTLS before logging in\r\n"),
        (Proto::Imap, Reply::NotAllowed) => format!("{tag} BAD STARTTLS is not allowed after authentication\r\n"),
        (Proto::Pop3, Reply::Go) => "+OK Begin TLS negotiation\r\n".to_string(),
        (Proto::Pop3, Reply::Unavailable) => "-ERR [SYS/TEMP] TLS not available right now\r\n".to_string(),
        (Proto::Pop3, Reply::Active) => "-ERR TLS is already active\r\n".to_string(),
        (Proto::Pop3, Reply::Required) => "-ERR [SYS/PERM] Use STLS before logging in\r\n".to_string(),
        (Proto::Pop3, Reply::NotAllowed) => "-ERR STLS is only allowed before authentication\r\n".to_string(),
        (Proto::Nntp, Reply::Go) => "382 Continue with TLS negotiation\r\n".to_string(),
        (Proto::Nntp, Reply::Unavailable) => "580 Can not initiate TLS negotiation\r\n".to_string(),
        (Proto::Nntp, Reply::Active) => "502 Command unavailable: TLS is already active\r\n".to_string(),
        (Proto::Nntp, Reply::Required) => "483 Encryption required: use STARTTLS first\r\n".to_string(),
        (Proto::Nntp, Reply::NotAllowed) => "502 Command unavailable after authentication\r\n".to_string(),
        (Proto::Sieve, Reply::Go) => "OK \"Begin TLS negotiation now\"\r\n".to_string(),
        (Proto::Sieve, Reply::Unavailable) => "NO (TRYLATER) \"TLS not available right now\"\r\n".to_string(),
        (Proto::Sieve, Reply::Active) => "NO \"TLS is already active\"\r\n".to_string(),
        (Proto::Sieve, Reply::Required) => "NO (ENCRYPT-NEEDED) \"Use STARTTLS before authenticating\"\r\n".to_string(),
        (Proto::Sieve, Reply::NotAllowed) => "NO \"STARTTLS is not allowed after authentication\"\r\n".to_string(),
        (_, Reply::ResetFirst) => return None,
    };
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_per_protocol() {
        assert_eq!(parse(Proto::Smtp, b"ehlo x\r\n").cmd, Command::Hello);
        assert_eq!(parse(Proto::Imap, b"a1 starttls").cmd, Command::StartTls);
        assert_eq!(parse(Proto::Imap, b"a1 starttls").tag, "a1");
        assert_eq!(parse(Proto::Imap, b"a1 LOGIN u p").cmd, Command::Auth);
        assert_eq!(parse(Proto::Imap, b"* LOGIN u p").tag, "");
        assert_eq!(parse(Proto::Pop3, b"STLS").cmd, Command::StartTls);
        assert_eq!(parse(Proto::Pop3, b"user bob").cmd, Command::Auth);
        assert_eq!(parse(Proto::Nntp, b"AUTHINFO USER bob").cmd, Command::Auth);
        assert_eq!(parse(Proto::Nntp, b"capabilities").cmd, Command::Hello);
        assert_eq!(parse(Proto::Sieve, b"AUTHENTICATE \"PLAIN\" \"...\"").cmd, Command::Auth);
        assert_eq!(parse(Proto::Sieve, b"LOGOUT").cmd, Command::Quit);
        assert_eq!(parse(Proto::Pop3, b"").cmd, Command::Other);
    }

    #[test]
    fn require_tls_rules() {
        assert!(!allowed_before_tls(Proto::Smtp, Command::Other));
        assert!(allowed_before_tls(Proto::Imap, Command::Other));
        assert!(!allowed_before_tls(Proto::Imap, Command::Auth));
        assert!(!allowed_before_tls(Proto::Nntp, Command::Auth));
    }

    #[test]
    fn replies_carry_the_tag_and_the_rfc_codes() {
        assert_eq!(reply(Proto::Imap, Reply::Go, "a7").unwrap(), "a7 OK Begin TLS negotiation now\r\n");
        assert!(reply(Proto::Nntp, Reply::Required, "").unwrap().starts_with("483 "));
        assert!(reply(Proto::Nntp, Reply::Unavailable, "").unwrap().starts_with("580 "));
        assert!(reply(Proto::Pop3, Reply::Unavailable, "").unwrap().contains("[SYS/TEMP]"));
        assert!(reply(Proto::Sieve, Reply::Required, "").unwrap().contains("ENCRYPT-NEEDED"));
        assert_eq!(reply(Proto::Imap, Reply::ResetFirst, "a"), None);
    }
}
