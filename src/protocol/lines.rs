//! Line framing over arbitrarily fragmented input, with a line-length limit.

use crate::error::{Code, Error, Result};

/// Collects bytes and hands out complete lines (CRLF, or a bare LF, stripped).
#[derive(Debug, Default)]
pub struct LineBuf {
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for a line feed.
    scanned: usize,
    max_line: usize,
}

impl LineBuf {
    /// A buffer whose lines may be at most `max_line` bytes long.
    pub fn new(max_line: usize) -> Self {
        LineBuf { buf: Vec::new(), scanned: 0, max_line }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete line, without its ending; `None` until one is complete.
    /// A line longer than the limit is an error as soon as the limit is passed,
    /// without waiting for its end.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>> {
        match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let end = self.scanned + i;
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.scanned = 0;
                if line.len() > self.max_line {
                    return Err(too_long(line.len(), self.max_line));
                }
                Ok(Some(line))
            }
            None => {
                self.scanned = self.buf.len();
                // The limit excludes the CRLF: allow one trailing CR before failing.
                let partial = self.buf.len() - usize::from(self.buf.last() == Some(&b'\r'));
                if partial > self.max_line {
                    return Err(too_long(partial, self.max_line));
                }
                Ok(None)
            }
        }
    }

    /// How many bytes are buffered past the last complete line.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Takes every buffered byte out.
    pub fn take(&mut self) -> Vec<u8> {
        self.scanned = 0;
        std::mem::take(&mut self.buf)
    }

    /// Forgets every buffered byte.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.scanned = 0;
    }
}

fn too_long(len: usize, max: usize) -> Error {
    Error::new(Code::LineTooLong, format!("line of at least {len} bytes, the limit is {max}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_byte_at_a_time() {
        let mut lb = LineBuf::new(100);
        let mut got = Vec::new();
        for b in b"220 hi\r\n250-a\n250 b\r\n" {
            lb.extend(&[*b]);
            while let Some(l) = lb.next_line().unwrap() {
                got.push(String::from_utf8(l).unwrap());
            }
        }
        assert_eq!(got, ["220 hi", "250-a", "250 b"]);
        assert_eq!(lb.pending(), 0);
    }

    #[test]
    fn overlong_line_fails_before_its_end() {
        let mut lb = LineBuf::new(10);
        lb.extend(b"01234567890123");
        assert_eq!(lb.next_line().unwrap_err().code, Code::LineTooLong);
    }

    #[test]
    fn line_at_the_limit_passes() {
        let mut lb = LineBuf::new(5);
        lb.extend(b"12345\r");
        assert_eq!(lb.next_line().unwrap(), None);
        lb.extend(b"\nrest");
        assert_eq!(lb.next_line().unwrap().unwrap(), b"12345");
        assert_eq!(lb.pending(), 4);
    }
}
