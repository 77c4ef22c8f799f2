//! Every integration test, in one binary: each test binary links the whole AWS SDK, so one binary
//! instead of twenty-one saves most of a test build's link time.
//!
//! - `offline`: the handler and the engine on scripted AWS answers and a paused clock; needs
//!   neither root nor the local AWS (`cargo test --test integration offline::`).
//! - `local_aws`: whole lifecycles on the local AWS (`scripts/local-aws`, started by each test),
//!   which runs SSM commands as root (`cargo test --test integration local_aws::`).
//! - `common`: the harness both use.
//!
//! One file of either is run with its module path, `cargo test --test integration
//! local_aws::lifecycle::`.

mod common;
mod local_aws;
mod offline;
