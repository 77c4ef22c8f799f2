//! Custom::EcsAmi: a CloudFormation custom resource that builds ECS container instance AMIs with
//! SSM Run Command.
//!
//! The library holds everything; the Lambda (`bootstrap`) and the local command line (`ecs-ami`)
//! are thin shells over [`handler::handle`], so both run exactly the same code path.

pub mod aws;
pub mod cfn;
pub mod engine;
pub mod handler;
pub mod hash;
pub mod local;
pub mod logging;
pub mod spec;
pub mod watch;
