//! The hand-over in Lambda: an asynchronous invocation of this same function.

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use serde_json::Value;

use crate::handler::Scheduler;

#[derive(Clone, Debug)]
pub struct SelfInvoke {
    client: aws_sdk_lambda::Client,
    function_name: String,
}

impl SelfInvoke {
    pub fn new(client: aws_sdk_lambda::Client, function_name: impl Into<String>) -> SelfInvoke {
        SelfInvoke {
            client,
            function_name: function_name.into(),
        }
    }

    /// The function this code runs in, as Lambda names it in `AWS_LAMBDA_FUNCTION_NAME`.
    pub fn from_env(config: &aws_config::SdkConfig) -> Option<SelfInvoke> {
        let name = std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok()?;
        Some(SelfInvoke::new(aws_sdk_lambda::Client::new(config), name))
    }
}

impl Scheduler for SelfInvoke {
    fn hand_over(
        &self,
        payload: Value,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send {
        let call = self
            .client
            .invoke()
            .function_name(&self.function_name)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(payload.to_string()));
        async move {
            let out = call.send().await.map_err(|e| {
                aws_smithy_types::error::display::DisplayErrorContext(&e).to_string()
            })?;
            // 202 Accepted is the only answer that means Lambda queued the invocation.
            if out.status_code() == 202 {
                Ok(())
            } else {
                Err(format!(
                    "lambda:Invoke answered status {}",
                    out.status_code()
                ))
            }
        }
    }
}
