//! A fixed-size text buffer for messages (no allocator in the firmware).

/// Up to 256 bytes of text; longer writes are cut.
#[derive(Debug)]
pub struct Buf {
    bytes: [u8; 256],
    len: usize,
}

impl Buf {
    /// Empty.
    pub const fn new() -> Self {
        Self { bytes: [0; 256], len: 0 }
    }

    /// The text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The text as `str` (always valid UTF-8: only whole `str`s are appended).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or("<message>")
    }
}

impl core::fmt::Write for Buf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.bytes.len() - self.len;
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
