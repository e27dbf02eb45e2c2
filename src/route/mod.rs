//! From request bytes to a destination and back: the RESP wire format, the request parser, the
//! command table and its key specs, the router (where a request goes: the one place), the calls
//! that travel to backends, fan-out planning (SCAN's batches too) and reply merging, the
//! script cache that repairs NOSCRIPT, and what CONFIG SET / GET of node settings mean to the
//! proxy (the settings it refuses to change everywhere, the ones it owns).

pub mod command;
pub mod config_refusal;
pub mod dispatch;
pub mod fanout;
pub mod merge;
pub mod own_settings;
pub mod protocol;
pub mod replica_choice;
pub mod resp;
pub mod router;
pub mod scan_batch;
pub mod scripts;
