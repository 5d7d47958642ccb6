//! Launch measurements as the platforms compute them while the host adds pages.

pub mod tdx;
