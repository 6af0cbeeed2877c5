//! `ferry-conformance`: remote-write compliance checks.
//!
//! - [`receiver`]: crafted requests against any receiver;
//! - [`sender`]: any sender against a scripted target and receiver;
//! - [`report`]: results as a table, JSON or JUnit XML.

pub mod receiver;
pub mod report;
pub mod sender;
