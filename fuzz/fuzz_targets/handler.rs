//! Any bytes that parse as JSON go through the whole handler against an AWS that refuses every
//! connection. It must not panic, and an event with a ResponseURL must get exactly one response
//! of at most 4,096 bytes (or be a hand-over envelope, which is refused when unreadable).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let has_url = event.get("ResponseURL").is_some_and(|u| u.is_string());
    let envelope = event.get(ecs_ami::handler::CONTINUATION_KEY).is_some();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let (handled, responses) = runtime.block_on(ecs_ami::local::handle_offline(event));
    for response in &responses {
        assert!(response.body().len() <= ecs_ami::cfn::MAX_BODY_BYTES);
    }
    match handled {
        Ok(ecs_ami::handler::Handled::Answered(_)) => assert_eq!(responses.len(), 1),
        Ok(other) => panic!("{other:?} with AWS unreachable"),
        Err(ecs_ami::handler::HandleError::NotCloudFormation(_)) => {
            assert!(responses.is_empty());
            assert!(!has_url || envelope, "a request with a ResponseURL was not answered");
        }
        Err(error) => panic!("{error}"),
    }
});
