//! On the local AWS (`scripts/local-aws`), as root.

mod authorization;
mod aws_rules;
mod bad_input;
mod cancellation;
mod container_images;
mod crashes;
mod deprecation;
mod ecs_stack;
mod fault_matrix;
mod image_tests;
mod imds_support;
mod kept_instances;
mod lifecycle;
mod long_builds;
mod regions;
mod scale;
mod security;
mod sharing;
mod source_filter;
mod ssm_parameters;
mod watch;
