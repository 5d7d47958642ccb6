//! The TDX build-time measurement MRTD (docs/specs.md 6.7; Intel TDX module ABI,
//! TDH.MEM.PAGE.ADD, TDH.MR.EXTEND and TDH.MR.FINALIZE).
//!
//! MRTD is one running SHA-384 over 128-byte extension buffers, finished when the TD is
//! finalized:
//! - TDH.MEM.PAGE.ADD of a page at `gpa` adds one buffer: `"MEM.PAGE.ADD"` in bytes
//!   0..12, the GPA (little-endian) in bytes 16..24, zeros elsewhere;
//! - TDH.MR.EXTEND of a 256-byte chunk at `gpa` adds three: `"MR.EXTEND"` in bytes 0..9
//!   with the GPA in bytes 16..24, then the chunk's two halves.
//!
//! The value depends on the order of the calls. Upstream KVM (`KVM_TDX_INIT_MEM_REGION`
//! with `KVM_TDX_MEASURE_MEMORY_REGION`, `tdx_gmem_post_populate`) adds a page and then
//! extends its 16 chunks before it moves on to the next page; [`Mrtd::add_page`] does
//! exactly that, and it is the order nacre's host follows.

use sha2::{Digest, Sha384};

/// Bytes of one extension buffer.
const BUFFER: usize = 128;
/// Bytes measured by one TDH.MR.EXTEND.
pub const EXTEND_CHUNK: usize = 256;
/// Bytes of a page.
pub const PAGE: usize = 4096;
/// MRTD size (SHA-384).
pub const MRTD_SIZE: usize = 48;

/// A running MRTD.
#[derive(Clone, Debug, Default)]
pub struct Mrtd {
    hash: Sha384,
}

/// One header buffer: `tag` then the GPA at byte 16.
fn header(tag: &[u8], gpa: u64) -> [u8; BUFFER] {
    let mut b = [0u8; BUFFER];
    b[..tag.len()].copy_from_slice(tag);
    b[16..24].copy_from_slice(&gpa.to_le_bytes());
    b
}

impl Mrtd {
    /// The MRTD of a TD before any page is added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Account for TDH.MEM.PAGE.ADD of the page at `gpa`.
    pub fn page_add(&mut self, gpa: u64) {
        self.hash.update(header(b"MEM.PAGE.ADD", gpa));
    }

    /// Account for TDH.MR.EXTEND of the 256 bytes `chunk` at `gpa`.
    pub fn mr_extend(&mut self, gpa: u64, chunk: &[u8; EXTEND_CHUNK]) {
        self.hash.update(header(b"MR.EXTEND", gpa));
        self.hash.update(chunk);
    }

    /// Add one 4 KiB page at `gpa` the way upstream KVM does: PAGE.ADD, then, if
    /// `contents` is measured, 16 MR.EXTENDs at `gpa`, `gpa + 0x100`, ...
    pub fn add_page(&mut self, gpa: u64, contents: Option<&[u8; PAGE]>) {
        self.page_add(gpa);
        if let Some(bytes) = contents {
            for (i, chunk) in bytes.chunks_exact(EXTEND_CHUNK).enumerate() {
                let mut c = [0u8; EXTEND_CHUNK];
                c.copy_from_slice(chunk);
                self.mr_extend(gpa + (i * EXTEND_CHUNK) as u64, &c);
            }
        }
    }

    /// TDH.MR.FINALIZE: the final value.
    pub fn finish(self) -> [u8; MRTD_SIZE] {
        self.hash.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::vectors::parse_u64;
    use std::path::PathBuf;

    fn vectors() -> PathBuf {
        crate::measure::vectors::dir("td-shim-derived")
    }

    /// One TDVF metadata section of the known-answer file.
    struct Section {
        data_offset: usize,
        raw_size: usize,
        address: u64,
        size: u64,
        attributes: u64,
    }

    const EXTENDMR: u64 = 1 << 0;
    const PAGE_AUG: u64 = 1 << 1;

    fn kat() -> (Vec<u8>, Vec<Section>, serde_json::Value) {
        let dir = vectors();
        let json: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join("derived_mrtd_kat.json"))
                .expect("the KAT JSON in tests/vectors"),
        )
        .expect("json");
        let image = std::fs::read(dir.join("derived_synthetic_tdvf.bin")).expect("KAT image");
        let sections = json["sections"]
            .as_array()
            .expect("sections")
            .iter()
            .map(|s| Section {
                data_offset: parse_u64(&s["data_offset"]) as usize,
                raw_size: parse_u64(&s["raw_size"]) as usize,
                address: parse_u64(&s["memory_address"]),
                size: parse_u64(&s["memory_size"]),
                attributes: parse_u64(&s["attributes"]),
            })
            .collect();
        (image, sections, json)
    }

    /// The page of `s` at `offset`, zero-padded past its raw data.
    fn page_of(image: &[u8], s: &Section, offset: usize) -> [u8; PAGE] {
        let mut page = [0u8; PAGE];
        let start = s.data_offset + offset;
        let end = (s.data_offset + s.raw_size).min(start + PAGE);
        if start < end {
            page[..end - start].copy_from_slice(&image[start..end]);
        }
        page
    }

    #[test]
    fn per_page_order_reproduces_the_known_answer() {
        let (image, sections, json) = kat();
        let mut mrtd = Mrtd::new();
        for s in sections.iter().filter(|s| s.attributes & PAGE_AUG == 0) {
            for off in (0..s.size as usize).step_by(PAGE) {
                let page = page_of(&image, s, off);
                let measured = (s.attributes & EXTENDMR != 0).then_some(&page);
                mrtd.add_page(s.address + off as u64, measured);
            }
        }
        assert_eq!(
            hex::encode(mrtd.finish()),
            json["mrtd_per_page_order_kvm_upstream"]
                .as_str()
                .expect("expected value")
        );
    }

    #[test]
    fn two_pass_order_gives_the_other_known_answer() {
        // All PAGE.ADDs of a section, then its EXTENDs: a different value, as the
        // vector says. Reproducing it too shows both primitives are right and that
        // the order is what separates the two.
        let (image, sections, json) = kat();
        let mut mrtd = Mrtd::new();
        for s in sections.iter().filter(|s| s.attributes & PAGE_AUG == 0) {
            for off in (0..s.size).step_by(PAGE) {
                mrtd.page_add(s.address + off);
            }
            if s.attributes & EXTENDMR != 0 {
                for off in (0..s.size as usize).step_by(PAGE) {
                    let page = page_of(&image, s, off);
                    for (i, chunk) in page.chunks_exact(EXTEND_CHUNK).enumerate() {
                        let mut c = [0u8; EXTEND_CHUNK];
                        c.copy_from_slice(chunk);
                        mrtd.mr_extend(s.address + (off + i * EXTEND_CHUNK) as u64, &c);
                    }
                }
            }
        }
        let got = hex::encode(mrtd.finish());
        assert_eq!(
            got,
            json["mrtd_two_pass_order_oak_style"]
                .as_str()
                .expect("expected value")
        );
        assert_ne!(
            got,
            json["mrtd_per_page_order_kvm_upstream"]
                .as_str()
                .expect("expected value")
        );
    }

    #[test]
    fn the_image_is_the_documented_synthetic_one() {
        // byte i = (7i + 3) mod 256, per the vector's manifest.
        let (image, _, _) = kat();
        assert_eq!(image.len(), 16384);
        assert!(image
            .iter()
            .enumerate()
            .take(0x3000)
            .all(|(i, &b)| b == ((7 * i + 3) % 256) as u8));
    }

    #[test]
    fn any_changed_byte_or_gpa_changes_the_mrtd() {
        let page = [0x5Au8; PAGE];
        let base = {
            let mut m = Mrtd::new();
            m.add_page(0x1000, Some(&page));
            m.finish()
        };
        let mut other = page;
        other[4095] ^= 1;
        let mut m = Mrtd::new();
        m.add_page(0x1000, Some(&other));
        assert_ne!(m.finish(), base);
        let mut m = Mrtd::new();
        m.add_page(0x2000, Some(&page));
        assert_ne!(m.finish(), base);
        let mut m = Mrtd::new();
        m.add_page(0x1000, None);
        assert_ne!(m.finish(), base);
    }
}
