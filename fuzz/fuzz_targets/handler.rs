//! Any bytes that parse as JSON go through the whole handler against an AWS that refuses every
//! connection, and must meet `offline::offline_answer_problem`'s property: no panic, and
//! an event with a ResponseURL answered exactly once within 4,096 bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/integration/common/offline.rs"]
mod offline;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    if let Some(problem) = runtime.block_on(offline::offline_answer_problem(event)) {
        panic!("{problem}");
    }
});
