//! Slot moves (work in progress).

pub mod plan;
