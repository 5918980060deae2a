//! Switchyard broker library.
pub mod config;
pub mod delivery;
pub mod log;
pub mod model;
pub mod rules;
