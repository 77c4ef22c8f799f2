//! One function per phase of a build. Each does one thing against AWS and returns the next phase
//! (now, or after a pause), or a [`BuildError`] saying what went wrong; [`Build::run`] does the
//! rest (lease, deadlines, hand-over, cleanup). What happens when a step fails: [`Build::await_step`].

use std::time::Duration;

use super::{Build, Next, Phase};
use crate::engine::Context;
use crate::engine::failure::BuildError;
use crate::engine::wait::Poll;

mod distribution;
mod image;
mod steps;
mod testing;

use steps::{StepSent, said_of};

impl Build {
    /// Runs the phase the build is in.
    pub(super) async fn advance(&mut self, cx: &Context<'_>) -> Result<Next, BuildError> {
        match self.state.phase.clone() {
            Phase::Resolve => self.resolve_source(cx).await,
            Phase::Launch => self.launch(cx).await,
            Phase::AwaitOnline {
                on,
                waited,
                state_checked,
            } => {
                self.within_limits(on)?;
                self.await_online(cx, on, waited, state_checked)
                    .await
                    .map_err(|error| said_of(on, error))
            }
            Phase::StartStep { on, index } => {
                self.within_limits(on)?;
                self.start_step(cx, on, index).await
            }
            Phase::AwaitStep {
                on,
                index,
                command_id,
                waited,
                state_checked,
            } => {
                self.within_limits(on)?;
                let step = StepSent {
                    on,
                    index,
                    command_id,
                };
                self.await_step(cx, step, waited, state_checked)
                    .await
                    .map_err(|error| said_of(on, error))
            }
            Phase::LaunchTest => self.launch_test(cx).await,
            Phase::AwaitEcs { waited } => {
                self.within_test_minutes()?;
                self.await_ecs(cx, waited).await
            }
            Phase::FinishTest => self.finish_test(cx).await,
            Phase::Stop => self.stop(cx).await,
            Phase::AwaitStopped { waited } => self.await_stopped(cx, waited).await,
            Phase::CreateImage => self.create_image(cx).await,
            Phase::AwaitImage { waited } => self.await_image(cx, waited).await,
            Phase::TagSnapshots => self.tag_snapshots(cx).await,
            Phase::Finish => self.finish(cx).await,
            Phase::Copy => self.copy(cx).await,
            Phase::AwaitCopies { waited } => self.await_copies(cx, waited).await,
            Phase::Publish => self.publish(cx).await,
            Phase::Done => Ok(Next::Run(Phase::Done)),
        }
    }
}

/// A wait that goes on: the same phase, polled again after the pause; or its limit reached.
pub(super) fn again_or_overdue(
    poll: Poll,
    phase: impl FnOnce(Duration) -> Phase,
    overdue: impl FnOnce() -> BuildError,
) -> Result<Next, BuildError> {
    match poll {
        Poll::Again { pause, waited } => Ok(Next::Sleep(pause, phase(waited))),
        Poll::Overdue => Err(overdue()),
    }
}
