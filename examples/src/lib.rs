//! Example services for Switchyard. [`saga`] is the order saga: four
//! services choreographed by routing rules, none calling another.

pub mod saga;
