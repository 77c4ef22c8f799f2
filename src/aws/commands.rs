//! SSM Run Command on the builder: whether its agent is Online, running a step, its result.

use super::*;

impl Aws {
    /// Whether the SSM agent on the instance reports Online; SendCommand fails before it does.
    /// Every page is read: a filtered answer may come as empty pages that carry a token
    /// (<https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_DescribeInstanceInformation.html>).
    pub async fn instance_online(&self, instance_id: &str) -> Result<bool> {
        let filter = ssmt::InstanceInformationStringFilter::builder()
            .key("InstanceIds")
            .values(instance_id)
            .build()
            .expect("key and values are set");
        let mut pages = self
            .ssm
            .describe_instance_information()
            .filters(filter)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| AwsError::from_sdk("ssm:DescribeInstanceInformation", e))?;
            if page.instance_information_list().iter().any(|info| {
                info.instance_id() == Some(instance_id)
                    && info.ping_status() == Some(&ssmt::PingStatus::Online)
            }) {
                return Ok(true);
            }
        }
        Ok(false)
    }
    pub async fn run_step(
        &self,
        instance_id: &str,
        script: &str,
        timeout_seconds: u32,
        comment: &str,
    ) -> Result<String> {
        let lines: Vec<String> = script.lines().map(str::to_owned).collect();
        // SendCommand takes no client token: an attempt that timed out after SSM took it would be
        // sent again and run the step twice. So this call alone has no per-attempt timeout
        // (throttling and server errors, answered before anything runs, are still retried); a
        // call that never answers ends with the invocation's deadline, and the next invocation
        // finds the command by its comment before sending (`start_step`).
        let timeouts = self
            .ssm
            .config()
            .timeout_config()
            .cloned()
            .unwrap_or_else(|| aws_config::timeout::TimeoutConfig::builder().build())
            .to_builder()
            .disable_operation_attempt_timeout()
            .build();
        let out = self
            .ssm
            .send_command()
            .instance_ids(instance_id)
            .document_name("AWS-RunShellScript")
            .parameters("commands", lines)
            .parameters("executionTimeout", vec![timeout_seconds.to_string()])
            .comment(comment.chars().take(100).collect::<String>())
            .customize()
            .config_override(aws_sdk_ssm::config::Builder::default().timeout_config(timeouts))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ssm:SendCommand", e))?;
        out.command()
            .and_then(|c| c.command_id())
            .map(str::to_owned)
            .ok_or_else(|| AwsError::in_answer("ssm:SendCommand", "the answer named no command"))
    }
    pub async fn step_result(&self, command_id: &str, instance_id: &str) -> Result<StepResult> {
        let out = self
            .ssm
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(instance_id)
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            // Right after SendCommand the invocation may not be visible yet.
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_invocation_does_not_exist()) =>
            {
                return Ok(StepResult {
                    status: StepStatus::Running,
                    detail: "Pending".into(),
                    exit_code: -1,
                    stdout: String::new(),
                    stderr: String::new(),
                });
            }
            Err(error) => return Err(AwsError::from_sdk("ssm:GetCommandInvocation", error)),
        };
        use ssmt::CommandInvocationStatus as S;
        let status = match out.status() {
            Some(S::Success) => StepStatus::Success,
            Some(S::Failed) => StepStatus::Failed,
            Some(S::TimedOut) => StepStatus::TimedOut,
            Some(S::Cancelled) => StepStatus::Cancelled,
            _ => StepStatus::Running,
        };
        Ok(StepResult {
            status,
            detail: out.status_details().unwrap_or_default().to_owned(),
            exit_code: out.response_code(),
            stdout: out.standard_output_content().unwrap_or_default().to_owned(),
            stderr: out.standard_error_content().unwrap_or_default().to_owned(),
        })
    }
    /// The commands sent to an instance, in no particular order, as (command id, comment): how a resumed
    /// build learns which steps already ran.
    pub async fn commands_sent_to(&self, instance_id: &str) -> Result<Vec<(String, String)>> {
        Ok(self
            .commands_on(instance_id)
            .await?
            .into_iter()
            .map(|c| (c.command_id, c.comment))
            .collect())
    }
    /// The commands sent to an instance, with their status and when each was sent (ms since the
    /// Unix epoch), oldest first.
    pub async fn commands_on(&self, instance_id: &str) -> Result<Vec<CommandSent>> {
        let commands: Vec<ssmt::Command> = self
            .ssm
            .list_commands()
            .instance_id(instance_id)
            .into_paginator()
            .items()
            .send()
            .collect::<std::result::Result<_, _>>()
            .await
            .map_err(|e| AwsError::from_sdk("ssm:ListCommands", e))?;
        let mut sent: Vec<CommandSent> = commands
            .iter()
            .filter_map(|c| {
                Some(CommandSent {
                    command_id: c.command_id()?.to_owned(),
                    comment: c.comment().unwrap_or_default().to_owned(),
                    status: c
                        .status()
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_default(),
                    requested_ms: c
                        .requested_date_time()
                        .and_then(|t| t.to_millis().ok())
                        .and_then(|ms| u64::try_from(ms).ok()),
                })
            })
            .collect();
        sent.sort_by_key(|c| c.requested_ms);
        Ok(sent)
    }
    pub async fn cancel_step(&self, command_id: &str, instance_id: &str) -> Result<()> {
        self.ssm
            .cancel_command()
            .command_id(command_id)
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ssm:CancelCommand", e))?;
        Ok(())
    }
}
