//! Turns a failed attempt into a failure class and, for intolerance, the next move
//! down the ladder, using only what was seen on the wire (DESIGN.md, "Recovery").

use super::{FailureClass, Rung};
use crate::error::Code;
use crate::tls::observe::FlightObserver;

/// TLS alert descriptions (RFC 8446 section 6.2).
pub mod alert {
    /// close_notify
    pub const CLOSE_NOTIFY: u8 = 0;
    /// unexpected_message
    pub const UNEXPECTED_MESSAGE: u8 = 10;
    /// bad_record_mac
    pub const BAD_RECORD_MAC: u8 = 20;
    /// handshake_failure
    pub const HANDSHAKE_FAILURE: u8 = 40;
    /// illegal_parameter
    pub const ILLEGAL_PARAMETER: u8 = 47;
    /// decode_error
    pub const DECODE_ERROR: u8 = 50;
    /// protocol_version
    pub const PROTOCOL_VERSION: u8 = 70;
    /// internal_error
    pub const INTERNAL_ERROR: u8 = 80;
    /// inappropriate_fallback
    pub const INAPPROPRIATE_FALLBACK: u8 = 86;
    /// unrecognized_name
    pub const UNRECOGNIZED_NAME: u8 = 112;
}

/// Everything known about a failed handshake attempt.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    /// The error code the attempt ended with.
    pub code: Code,
    /// The rung whose hello was sent.
    pub rung: Rung,
    /// Whether SNI was sent.
    pub sni: bool,
    /// What the server sent back.
    pub flight: &'a FlightObserver,
}

/// The class of a failed attempt.
pub fn classify(f: &Facts<'_>) -> FailureClass {
    use FailureClass as C;
    match f.code {
        Code::Ok => return C::None,
        Code::CertificateNameMismatch | Code::CertificateUntrusted | Code::CertificateExpired | Code::CertificateInvalid | Code::DaneNoMatch => {
            return C::Certificate
        }
        Code::ReplyInjection | Code::CommandInjection | Code::DowngradeDetected | Code::DowngradeSuspected
        | Code::StrippingSuspected => return C::Attack,
        Code::StarttlsNotOffered | Code::StarttlsRefusedTemporary | Code::StarttlsRefusedPermanent
        | Code::StarttlsBadReply => return C::Refused,
        Code::Connect => return C::Network,
        _ => {}
    }
    let fl = f.flight;
    if let Some(sh) = fl.server_hello {
        // Past the ServerHello nothing is intolerance. A server choosing TLS 1.1 or
        // below is incompatible with rustls at every rung.
        return if sh.version() < 0x0303 { C::Incompatible } else { C::Other };
    }
    if fl.not_tls {
        return C::Incompatible;
    }
    if let Some((_, desc)) = fl.alert_before_hello {
        use alert::*;
        return match desc {
            UNEXPECTED_MESSAGE | BAD_RECORD_MAC | HANDSHAKE_FAILURE | ILLEGAL_PARAMETER | DECODE_ERROR
            | PROTOCOL_VERSION | INTERNAL_ERROR | UNRECOGNIZED_NAME | CLOSE_NOTIFY => C::Intolerance,
            _ => C::Other,
        };
    }
    match f.code {
        Code::Timeout if !fl.any_bytes() => C::Timeout,
        Code::Timeout => C::Other,
        Code::PeerClosed | Code::Io if !fl.any_bytes() => C::Intolerance,
        Code::PeerClosed | Code::Io => C::Network,
        _ => C::Other,
    }
}

/// A move on the ladder: the rung and SNI setting of the next attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    /// The rung to try next.
    pub rung: Rung,
    /// Whether to send SNI.
    pub sni: bool,
}

/// Where a failed first flight sends the next attempt, or None when it must not
/// move (the class is not intolerance, or the ladder is at its floor).
pub fn next_move(f: &Facts<'_>, class: FailureClass) -> Option<Move> {
    let down = |r: Rung| Rung::ALL.get(r as usize + 1).copied();
    match class {
        FailureClass::Timeout if f.rung == Rung::Modern => Some(Move { rung: Rung::Compact, sni: f.sni }),
        FailureClass::Intolerance => {
            let alert = f.flight.alert_before_hello.map(|(_, d)| d);
            match alert {
                Some(alert::UNRECOGNIZED_NAME) if f.sni => Some(Move { rung: f.rung, sni: false }),
                Some(alert::UNRECOGNIZED_NAME) => None,
                Some(alert::PROTOCOL_VERSION) if f.rung < Rung::Tls12 => Some(Move { rung: Rung::Tls12, sni: f.sni }),
                // A refusal of the hello's content: the PQ group or TLS 1.3 itself;
                // size is not the question, so skip the compact rung.
                Some(_) if f.rung < Rung::Classic => Some(Move { rung: Rung::Classic, sni: f.sni }),
                // Reset, EOF, close_notify with nothing else: the size comes first.
                _ => down(f.rung).map(|rung| Move { rung, sni: f.sni }),
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(bytes: &[u8]) -> FlightObserver {
        let mut o = FlightObserver::new();
        o.observe(bytes);
        o
    }

    fn facts<'a>(code: Code, rung: Rung, fl: &'a FlightObserver) -> Facts<'a> {
        Facts { code, rung, sni: true, flight: fl }
    }

    #[test]
    fn reset_before_any_byte_walks_down_one_rung_at_a_time() {
        let fl = FlightObserver::new();
        for (from, to) in [(Rung::Modern, Some(Rung::Compact)), (Rung::Compact, Some(Rung::Classic)), (Rung::Classic, Some(Rung::Tls12)), (Rung::Tls12, None)] {
            let f = facts(Code::Io, from, &fl);
            assert_eq!(classify(&f), FailureClass::Intolerance);
            assert_eq!(next_move(&f, FailureClass::Intolerance).map(|m| m.rung), to);
        }
    }

    #[test]
    fn protocol_version_alert_jumps_to_tls12() {
        let fl = obs(&[0x15, 3, 3, 0, 2, 2, alert::PROTOCOL_VERSION]);
        let f = facts(Code::TlsAlertReceived, Rung::Modern, &fl);
        assert_eq!(next_move(&f, classify(&f)), Some(Move { rung: Rung::Tls12, sni: true }));
    }

    #[test]
    fn handshake_failure_skips_the_compact_rung() {
        let fl = obs(&[0x15, 3, 3, 0, 2, 2, alert::HANDSHAKE_FAILURE]);
        let f = facts(Code::TlsAlertReceived, Rung::Modern, &fl);
        assert_eq!(next_move(&f, classify(&f)).unwrap().rung, Rung::Classic);
    }

    #[test]
    fn unrecognized_name_turns_sni_off_on_the_same_rung() {
        let fl = obs(&[0x15, 3, 3, 0, 2, 2, alert::UNRECOGNIZED_NAME]);
        let f = facts(Code::TlsAlertReceived, Rung::Compact, &fl);
        assert_eq!(next_move(&f, classify(&f)), Some(Move { rung: Rung::Compact, sni: false }));
    }

    #[test]
    fn nothing_after_a_server_hello_moves() {
        let fl = obs(&crate::tls::observe::server_hello_record(0x0303, [1; 32], Some(0x0304)));
        let f = facts(Code::TlsHandshake, Rung::Modern, &fl);
        assert_eq!(classify(&f), FailureClass::Other);
        assert_eq!(next_move(&f, FailureClass::Other), None);
        let fl = obs(&crate::tls::observe::server_hello_record(0x0302, [1; 32], None));
        assert_eq!(classify(&facts(Code::TlsHandshake, Rung::Modern, &fl)), FailureClass::Incompatible);
    }

    #[test]
    fn certificate_and_attack_classes_never_move() {
        let fl = FlightObserver::new();
        for (code, class) in [
            (Code::CertificateUntrusted, FailureClass::Certificate),
            (Code::DowngradeDetected, FailureClass::Attack),
            (Code::ReplyInjection, FailureClass::Attack),
            (Code::StarttlsRefusedTemporary, FailureClass::Refused),
            (Code::Connect, FailureClass::Network),
        ] {
            let f = facts(code, Rung::Modern, &fl);
            assert_eq!(classify(&f), class, "{code:?}");
            assert_eq!(next_move(&f, class), None);
        }
    }

    #[test]
    fn timeout_moves_only_from_the_top() {
        let fl = FlightObserver::new();
        let f = facts(Code::Timeout, Rung::Modern, &fl);
        assert_eq!(next_move(&f, classify(&f)).unwrap().rung, Rung::Compact);
        let f = facts(Code::Timeout, Rung::Compact, &fl);
        assert_eq!(next_move(&f, classify(&f)), None);
    }
}
