//! A fixed-size text buffer for messages. The firmware does not use `core::fmt`:
//! its precompiled formatting code uses SSE, which ring 0 must avoid (the firmware is
//! built without SSE; see `.cargo/config.toml`).

/// Up to `N` bytes of text (256 unless said); longer writes are cut.
#[derive(Debug)]
pub struct Buf<const N: usize = 256> {
    bytes: [u8; N],
    len: usize,
}

impl Buf {
    /// Empty, for a message.
    pub const fn new() -> Self {
        Self::sized()
    }
}

impl<const N: usize> Buf<N> {
    /// Empty, of `N` bytes.
    pub const fn sized() -> Self {
        Self {
            bytes: [0; N],
            len: 0,
        }
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

impl Default for Buf {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Buf<N> {
    /// Append text (cut at a character boundary when full).
    pub fn push(&mut self, s: &str) -> &mut Self {
        let room = self.bytes.len() - self.len;
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        self
    }

    /// Append `v` as `0x`-prefixed hexadecimal.
    pub fn hex(&mut self, v: u64) -> &mut Self {
        let mut digits = [0u8; 18];
        digits[0] = b'0';
        digits[1] = b'x';
        let mut n = 2;
        let mut started = false;
        for shift in (0..16).rev() {
            let d = ((v >> (shift * 4)) & 0xF) as u8;
            if d != 0 || started || shift == 0 {
                started = true;
                digits[n] = if d < 10 { b'0' + d } else { b'a' + d - 10 };
                n += 1;
            }
        }
        // Only ASCII digits were written.
        self.push(core::str::from_utf8(&digits[..n]).unwrap_or("?"))
    }

    /// Append `v` in decimal.
    pub fn dec(&mut self, mut v: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut n = digits.len();
        loop {
            n -= 1;
            digits[n] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(core::str::from_utf8(&digits[n..]).unwrap_or("?"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_in_hex_and_decimal() {
        let mut b = Buf::new();
        b.hex(0).push(" ").hex(0xDEAD_BEEF).push(" ").hex(u64::MAX);
        assert_eq!(b.as_str(), "0x0 0xdeadbeef 0xffffffffffffffff");
        let mut b = Buf::new();
        b.dec(0).push(",").dec(42).push(",").dec(u64::MAX);
        assert_eq!(b.as_str(), "0,42,18446744073709551615");
    }

    #[test]
    fn a_full_buffer_cuts_at_a_character_boundary() {
        let mut b = Buf::new();
        for _ in 0..255 {
            b.push("a");
        }
        b.push("é");
        assert_eq!(
            b.as_bytes().len(),
            255,
            "the two-byte character does not fit"
        );
        b.push("b").dec(7);
        assert_eq!(b.as_bytes().len(), 256);
        assert!(b.as_str().ends_with('b'));
    }
}
