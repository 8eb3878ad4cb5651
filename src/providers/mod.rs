//! The providers nodeup drives, one folder or file each. Every one implements `NodeDriver` and is
//! registered by name in `driver`.

pub mod dummy;
pub mod local;
pub mod ovh;
