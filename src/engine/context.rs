//! What every part of a request's work is given: the AWS clients, the request's identity and the
//! timing, as one value.

use crate::aws::Aws;
use crate::cfn::Identity;
use crate::engine::Timing;

/// The AWS clients (in the function's region), the request the work is for, and how long its
/// waits last. Cheap to copy: it borrows all three.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub aws: &'a Aws,
    pub identity: &'a Identity,
    pub timing: &'a Timing,
}

impl<'a> Context<'a> {
    pub fn new(aws: &'a Aws, identity: &'a Identity, timing: &'a Timing) -> Context<'a> {
        Context {
            aws,
            identity,
            timing,
        }
    }
}
