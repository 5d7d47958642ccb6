//! Handlers for guest exits, one per GHCB exit code or protocol.

pub mod snp;
