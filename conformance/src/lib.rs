//! `ferry-conformance`: remote-write compliance checks.
//!
//! - [`receiver`]: crafted requests against any receiver;
//! - [`report`]: results as a table, JSON or JUnit XML.

pub mod receiver;
pub mod report;
