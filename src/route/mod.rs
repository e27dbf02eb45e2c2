//! From request bytes to a destination and back: the RESP wire format, the request parser, the
//! command table and its key specs, the router (where a request goes: the one place), the calls
//! that travel to backends, fan-out planning (SCAN's batches too) and reply merging, and the
//! script cache that repairs NOSCRIPT.

pub mod command;
pub mod dispatch;
pub mod fanout;
pub mod merge;
pub mod protocol;
pub mod resp;
pub mod router;
pub mod scan_batch;
pub mod scripts;
