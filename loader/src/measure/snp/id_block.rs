//! The SEV-SNP ID block and the AMD encoding of the keys that sign it (docs/specs.md 5.6; AMD
//! SEV-SNP firmware ABI, SNP_LAUNCH_FINISH: ID_BLOCK, ID_AUTH_INFO and the ECDSA public
//! key format).
//!
//! A host may hand SNP_LAUNCH_FINISH an [`IdBlock`] naming the launch digest the guest
//! must have, signed with an ID key whose public half (and its author key's) goes into
//! ID_AUTH_INFO in the [`EcdsaPublicKey`] encoding. The security processor refuses the
//! launch if the digest differs, and every attestation report then carries the block's
//! family and image IDs, SHA-384 of the ID key's encoding (ID_KEY_DIGEST) and of the
//! author key's (AUTHOR_KEY_DIGEST).

use core::mem::{offset_of, size_of};
use p384::elliptic_curve::sec1::ToEncodedPoint;
use p384::pkcs8::{DecodePrivateKey, DecodePublicKey};
use p384::{PublicKey, SecretKey};
use sha2::{Digest, Sha384};
use thiserror::Error;
use zerocopy::{Immutable, IntoBytes, KnownLayout};

use crate::measure::MEASUREMENT_SIZE;

/// Size of ID_BLOCK (KVM `KVM_SEV_SNP_ID_BLOCK_SIZE`).
pub const ID_BLOCK_SIZE: usize = 96;

/// The ID block format version: 1, the only one defined.
pub const ID_BLOCK_VERSION: u32 = 1;

/// Size of a public key in the AMD encoding (ID_AUTH_INFO's ID_KEY and AUTHOR_KEY).
pub const PUBLIC_KEY_SIZE: usize = 0x404;

/// The curve ID of NIST P-384 in the AMD public key encoding.
pub const CURVE_P384: u32 = 2;

/// Bytes of each coordinate in the AMD encoding: little-endian, zero-padded to 72.
const COORDINATE_SIZE: usize = 72;

/// Bytes of a P-384 coordinate.
const P384_COORDINATE_SIZE: usize = 48;

/// ID_BLOCK (docs/specs.md 5.6): what the guest's launch must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct IdBlock {
    /// LD: the launch digest the guest must end its launch with.
    pub launch_digest: [u8; MEASUREMENT_SIZE],
    /// FAMILY_ID, copied into every attestation report.
    pub family_id: [u8; 16],
    /// IMAGE_ID, copied into every attestation report.
    pub image_id: [u8; 16],
    /// VERSION: [`ID_BLOCK_VERSION`].
    pub version: u32,
    /// GUEST_SVN, copied into every attestation report.
    pub guest_svn: u32,
    /// POLICY: the guest policy (docs/specs.md 4.3), which must equal SNP_LAUNCH_START's.
    pub policy: u64,
}

const _: () = assert!(size_of::<IdBlock>() == ID_BLOCK_SIZE);
const _: () = assert!(offset_of!(IdBlock, family_id) == 0x30);
const _: () = assert!(offset_of!(IdBlock, image_id) == 0x40);
const _: () = assert!(offset_of!(IdBlock, version) == 0x50);
const _: () = assert!(offset_of!(IdBlock, guest_svn) == 0x54);
const _: () = assert!(offset_of!(IdBlock, policy) == 0x58);

impl IdBlock {
    /// The ID block (version [`ID_BLOCK_VERSION`]) for a guest whose launch ends with
    /// `launch_digest`.
    pub fn new(
        launch_digest: [u8; MEASUREMENT_SIZE],
        family_id: [u8; 16],
        image_id: [u8; 16],
        guest_svn: u32,
        policy: u64,
    ) -> Self {
        Self {
            launch_digest,
            family_id,
            image_id,
            version: ID_BLOCK_VERSION,
            guest_svn,
            policy,
        }
    }

    /// The 96 bytes handed to SNP_LAUNCH_FINISH (and signed by the ID key).
    pub fn to_bytes(&self) -> [u8; ID_BLOCK_SIZE] {
        let mut out = [0u8; ID_BLOCK_SIZE];
        out.copy_from_slice(self.as_bytes());
        out
    }
}

/// A public key in the AMD encoding of ECDSA public keys (docs/specs.md 5.6): curve ID, then
/// the affine coordinates QX and QY, each little-endian and zero-padded to 72 bytes, then
/// zeros up to 0x404 bytes.
#[derive(Debug, Clone, PartialEq, Eq, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EcdsaPublicKey {
    /// CURVE: [`CURVE_P384`].
    pub curve: u32,
    /// QX, little-endian.
    pub qx: [u8; COORDINATE_SIZE],
    /// QY, little-endian.
    pub qy: [u8; COORDINATE_SIZE],
    /// Reserved, zero.
    pub reserved: [u8; PUBLIC_KEY_SIZE - 4 - 2 * COORDINATE_SIZE],
}

const _: () = assert!(size_of::<EcdsaPublicKey>() == PUBLIC_KEY_SIZE);
const _: () = assert!(offset_of!(EcdsaPublicKey, qx) == 0x04);
const _: () = assert!(offset_of!(EcdsaPublicKey, qy) == 0x4C);
const _: () = assert!(offset_of!(EcdsaPublicKey, reserved) == 0x94);

/// Why a key cannot be used as an ID or author key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// No PEM block nacre reads.
    #[error(
        "the key is not in PEM form: expected a P-384 key as PKCS#8 (BEGIN PRIVATE KEY), SEC1 \
         (BEGIN EC PRIVATE KEY) or SubjectPublicKeyInfo (BEGIN PUBLIC KEY)"
    )]
    NotPem,
    /// A PEM block that does not hold a P-384 key.
    #[error("the {label} PEM block does not hold a valid NIST P-384 key")]
    NotP384 {
        /// The PEM label (`PRIVATE KEY`, `EC PRIVATE KEY` or `PUBLIC KEY`).
        label: &'static str,
    },
}

impl EcdsaPublicKey {
    /// The encoding of a P-384 public key.
    pub fn from_p384(key: &PublicKey) -> Self {
        let point = key.to_encoded_point(false);
        let mut encoded = Self {
            curve: CURVE_P384,
            qx: [0; COORDINATE_SIZE],
            qy: [0; COORDINATE_SIZE],
            reserved: [0; PUBLIC_KEY_SIZE - 4 - 2 * COORDINATE_SIZE],
        };
        // An uncompressed point of a valid public key (never the identity) has both
        // coordinates, 48 bytes each, big-endian.
        if let (Some(x), Some(y)) = (point.x(), point.y()) {
            little_endian(&mut encoded.qx, x);
            little_endian(&mut encoded.qy, y);
        }
        encoded
    }

    /// The encoding of the public half of a P-384 key in PEM: a PKCS#8 or SEC1 private
    /// key, or a SubjectPublicKeyInfo public key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let key = if pem.contains("-----BEGIN PUBLIC KEY-----") {
            PublicKey::from_public_key_pem(pem).map_err(|_| KeyError::NotP384 {
                label: "PUBLIC KEY",
            })?
        } else if pem.contains("-----BEGIN EC PRIVATE KEY-----") {
            SecretKey::from_sec1_pem(pem)
                .map_err(|_| KeyError::NotP384 {
                    label: "EC PRIVATE KEY",
                })?
                .public_key()
        } else if pem.contains("-----BEGIN PRIVATE KEY-----") {
            SecretKey::from_pkcs8_pem(pem)
                .map_err(|_| KeyError::NotP384 {
                    label: "PRIVATE KEY",
                })?
                .public_key()
        } else {
            return Err(KeyError::NotPem);
        };
        Ok(Self::from_p384(&key))
    }

    /// The 0x404 bytes of the encoding.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_SIZE] {
        let mut out = [0u8; PUBLIC_KEY_SIZE];
        out.copy_from_slice(self.as_bytes());
        out
    }

    /// SHA-384 of the encoding: the attestation report's ID_KEY_DIGEST for an ID key,
    /// AUTHOR_KEY_DIGEST for an author key.
    pub fn digest(&self) -> [u8; MEASUREMENT_SIZE] {
        Sha384::digest(self.as_bytes()).into()
    }
}

/// Write the big-endian `coordinate` into `out` little-endian, zero-padded.
fn little_endian(out: &mut [u8; COORDINATE_SIZE], coordinate: &[u8]) {
    let len = coordinate.len().min(P384_COORDINATE_SIZE);
    for (dst, src) in out.iter_mut().zip(coordinate[..len].iter().rev()) {
        *dst = *src;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::vectors::{self, unhex};
    use base64::Engine;
    use proptest::prelude::*;

    /// The ID-block known answer of the vectors' MANIFEST (virtee/sev's test keys).
    const LAUNCH_DIGEST: &str = "a14d638341e5674628fe1e02fbedebe5e5ab4faf1dd72d8966068e615bb99efd13d214b35c231715b38e263dc6059745";
    const ID_BLOCK_BASE64: &str = "oU1jg0HlZ0Yo/h4C++3r5eWrT68d1y2JZgaOYVu5nv0T0hSzXCMXFbOOJj3GBZdFAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABAAAAAAAAAAAAAwAAAAAA";
    const ID_KEY_DIGEST: &str = "59fb2c686dfa4fef49f38339aa775c90051c28d57383ddc3baf3b5eb4b1496df3b0dbbdcbae5fe27677a644820773fe2";
    const AUTHOR_KEY_DIGEST: &str = "eed81169fb0cb5e0ec34794f128fd4e0c4a46f67c65a1adfa81fcb24bcc088c272369b7ffc3eb2b6af6a4284a1b36c5f";

    fn key_pem(name: &str) -> String {
        std::fs::read_to_string(vectors::dir("virtee-sev").join(name)).expect("the test key")
    }

    #[test]
    fn id_block_known_answer() {
        let digest: [u8; 48] = unhex(LAUNCH_DIGEST).try_into().expect("48 bytes");
        let block = IdBlock::new(digest, [0; 16], [0; 16], 0, 0x30000);
        let encoded = base64::engine::general_purpose::STANDARD.encode(block.to_bytes());
        assert_eq!(encoded, ID_BLOCK_BASE64);
    }

    #[test]
    fn id_block_fields_land_at_their_offsets() {
        let block = IdBlock::new(
            [1; 48],
            [2; 16],
            [3; 16],
            0x0506_0708,
            0x1122_3344_5566_7788,
        );
        let bytes = block.to_bytes();
        assert_eq!(&bytes[..0x30], &[1; 48]);
        assert_eq!(&bytes[0x30..0x40], &[2; 16]);
        assert_eq!(&bytes[0x40..0x50], &[3; 16]);
        assert_eq!(&bytes[0x50..0x54], &1u32.to_le_bytes());
        assert_eq!(&bytes[0x54..0x58], &0x0506_0708u32.to_le_bytes());
        assert_eq!(&bytes[0x58..], &0x1122_3344_5566_7788u64.to_le_bytes());
    }

    #[test]
    fn id_key_digest_known_answer() {
        let key = EcdsaPublicKey::from_pem(&key_pem("test_id_key.pem")).expect("a P-384 key");
        assert_eq!(hex::encode(key.digest()), ID_KEY_DIGEST);
    }

    #[test]
    fn author_key_digest_known_answer() {
        let key = EcdsaPublicKey::from_pem(&key_pem("test_auth_key.pem")).expect("a P-384 key");
        assert_eq!(hex::encode(key.digest()), AUTHOR_KEY_DIGEST);
    }

    #[test]
    fn encoding_layout() {
        let pem = key_pem("test_id_key.pem");
        let secret = SecretKey::from_pkcs8_pem(&pem).expect("PKCS#8");
        let point = secret.public_key().to_encoded_point(false);
        let bytes = EcdsaPublicKey::from_pem(&pem).expect("key").to_bytes();
        assert_eq!(bytes.len(), 0x404);
        assert_eq!(&bytes[..4], &[2, 0, 0, 0]);
        let mut x: Vec<u8> = point.x().expect("x").to_vec();
        x.reverse();
        let mut y: Vec<u8> = point.y().expect("y").to_vec();
        y.reverse();
        assert_eq!(&bytes[4..4 + 48], &x[..]);
        assert!(bytes[4 + 48..0x4C].iter().all(|&b| b == 0));
        assert_eq!(&bytes[0x4C..0x4C + 48], &y[..]);
        assert!(bytes[0x4C + 48..].iter().all(|&b| b == 0));
    }

    #[test]
    fn public_and_sec1_pem_give_the_same_encoding() {
        use p384::pkcs8::{EncodePublicKey, LineEnding};
        let pem = key_pem("test_auth_key.pem");
        let secret = SecretKey::from_pkcs8_pem(&pem).expect("PKCS#8");
        let public_pem = secret
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("SPKI PEM");
        let sec1_pem = secret.to_sec1_pem(LineEnding::LF).expect("SEC1 PEM");
        let expected = EcdsaPublicKey::from_pem(&pem).expect("key");
        assert_eq!(EcdsaPublicKey::from_pem(&public_pem), Ok(expected.clone()));
        assert_eq!(EcdsaPublicKey::from_pem(&sec1_pem), Ok(expected));
    }

    #[test]
    fn other_input_is_refused() {
        assert_eq!(EcdsaPublicKey::from_pem("hello"), Err(KeyError::NotPem));
        let broken = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert_eq!(
            EcdsaPublicKey::from_pem(broken),
            Err(KeyError::NotP384 {
                label: "PRIVATE KEY"
            })
        );
    }

    proptest! {
        #[test]
        fn arbitrary_pem_never_panics(
            label in prop::sample::select(vec!["PRIVATE KEY", "EC PRIVATE KEY", "PUBLIC KEY", "X"]),
            body in "[A-Za-z0-9+/=\n]{0,300}",
        ) {
            let pem = format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n");
            prop_assert!(EcdsaPublicKey::from_pem(&pem).is_err());
        }
    }
}
