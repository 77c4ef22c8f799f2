//! On scripted AWS answers, without the local AWS.

mod fuzz_requests;
mod long_builds;
mod macro_expansion;
mod mocked_failures;
mod protocol;
