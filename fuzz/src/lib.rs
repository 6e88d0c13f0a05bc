//! Ferry's pure parsing code, compiled alone for fuzzing: the DynamoDB JSON decoder (`item`,
//! `number`, `json`), the Ion export readers (`ion`, the reference on `ion-rs`, and `ion_scan`, the
//! transcoder of the fast path, with `change` which `ion` needs), the configuration loader (`config` and what it needs) and the queue
//! message parser (`queue`) and the applier's SQL literal encoder (`literal`), from the same source
//! files as the real crates.
#![allow(missing_docs, dead_code, unused_imports, rustdoc::broken_intra_doc_links)]

// The worker's modules name `ferry_shared::…`: this crate stands in for it.
extern crate self as ferry_shared;

#[path = "../../shared/src/error.rs"]
pub mod error;
pub use error::{Error, Result};
#[path = "../../shared/src/failpoint.rs"]
pub mod failpoint;
#[path = "../../shared/src/config.rs"]
pub mod config;
#[path = "../../shared/src/redact.rs"]
pub mod redact;
#[path = "../../shared/src/ident.rs"]
pub mod ident;
#[path = "../../worker/src/item.rs"]
pub mod item;
#[path = "../../worker/src/change.rs"]
pub mod change;
#[path = "../../worker/src/ion.rs"]
pub mod ion;
#[path = "../../worker/src/ion_scan.rs"]
pub mod ion_scan;
#[path = "../../worker/src/json.rs"]
pub mod json;
#[path = "../../worker/src/number.rs"]
pub mod number;
#[path = "../../shared/src/queue.rs"]
pub mod queue;
#[path = "../../shared/src/schema/mod.rs"]
pub mod schema;
#[path = "../../worker/src/sink/literal.rs"]
pub mod literal;
