//! Builds of up to 12 hours: the EcsAmi macro (`crate::cfn::transform`) makes of one
//! `Custom::EcsAmi` a resource that builds (`XBuild`: `SignalUrl`, `ImageResource`), a wait
//! condition and its handle, and the resource that holds the image (`X`: `Signal`). See
//! docs/internals/design-long-builds.md.
//!
//! The resource that builds is handled as the request of the resource that holds the image
//! ([`as_build`]): under its logical id, so that the image, its lease, its leftovers and its
//! Delete are that resource's as for a short build. Where its answers go is [`Reply`]'s
//! business: the outcome is signalled to the wait condition's handle; CloudFormation, which
//! waits for the resource that builds itself, gets the outcome too when the first invocation of a
//! delivery reaches it (a rollback, a retag, a refusal: its real status), or else, at that
//! invocation's first hand-over, a SUCCESS saying the build goes on ([`acknowledgement`]). The
//! recorded answer stays the build's outcome, so a later delivery repeats it, never the build.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::aws::Aws;
use crate::cfn::{self, Identity, Operation, Outcome, Request, Response, SinkError, Status};
use crate::spec::{AmiSpec, fingerprint};

use super::ResponseSink;

/// The physical ids of the resources that build start with this: they hold no image.
pub const BUILD_PHYSICAL_ID_PREFIX: &str = "ecs-ami-build-";

/// The resource that builds, as its request's properties say: `(signal URL, image resource)`.
pub(super) fn signalling(request: &Request) -> Option<(String, String)> {
    let text = |key: &str| {
        request
            .properties
            .get(key)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    Some((text("SignalUrl")?, text("ImageResource")?))
}

/// The resource that builds has one physical id for its life, whatever its requests: a new one
/// at an Update would make CloudFormation delete the previous one in its cleanup, and that
/// Delete would cancel the build then in flight as one CloudFormation gave up on.
pub fn build_physical_id(identity: &Identity) -> String {
    format!(
        "{BUILD_PHYSICAL_ID_PREFIX}{}-{}",
        crate::hash::short_hash(&identity.stack_id),
        identity.logical_id
    )
}

pub fn is_build_physical_id(physical_id: &str) -> bool {
    physical_id.starts_with(BUILD_PHYSICAL_ID_PREFIX)
}

/// The SUCCESS the resource that builds answers when its build goes on past the first
/// invocation (at its first hand-over): the build's end reaches the wait condition.
pub(super) fn acknowledgement(request: &Request, image_resource: &str) -> Response {
    let outcome = Outcome::success(own_physical_id(request), Default::default()).with_reason(format!(
        "build in progress as request {}; its end is signalled to the wait condition, and {image_resource} answers with the image",
        request.identity.request_id
    ));
    Response::new(&request.identity, outcome)
}

/// The resource that builds: its physical id, as an answer of `status` gives it. A failed Create
/// has the failed-Create id (its Delete then touches nothing, as a short build's).
fn physical_id_for(request: &Request, status: Status) -> String {
    match (&request.operation, status) {
        (Operation::Create, Status::Failed) => cfn::failed_create_physical_id(&request.identity),
        _ => own_physical_id(request),
    }
}

fn own_physical_id(request: &Request) -> String {
    match &request.operation {
        Operation::Update { physical_id, .. } | Operation::Delete { physical_id } => {
            physical_id.clone()
        }
        Operation::Create => build_physical_id(&request.identity),
    }
}

/// The request as the build runs it: under the image resource's logical id; a Create or Update
/// answering to the wait condition handle's URL (an Update's physical id the image its previous
/// properties built, when there is one); a Delete answering CloudFormation as always.
pub(super) async fn as_build(
    request: &Request,
    (url, image_resource): (&str, &str),
    aws: &Aws,
) -> Request {
    let identity = Identity {
        logical_id: image_resource.to_owned(),
        ..request.identity.clone()
    };
    let (operation, response_url) = match &request.operation {
        Operation::Create => (Operation::Create, url.to_owned()),
        Operation::Update {
            physical_id,
            old_properties,
        } => {
            let current = image_of(aws, &identity, old_properties).await;
            let operation = Operation::Update {
                physical_id: current.unwrap_or_else(|| physical_id.clone()),
                old_properties: old_properties.clone(),
            };
            (operation, url.to_owned())
        }
        delete @ Operation::Delete { .. } => (delete.clone(), request.response_url.clone()),
    };
    Request {
        operation,
        identity,
        response_url,
        properties: request.properties.clone(),
    }
}

/// The image the previous properties built (they tag it, as a rollback finds it): the newest
/// available one. None when there is none, or it cannot be looked for now: the Update then
/// finds an image with the wanted content by its fingerprint, or builds.
async fn image_of(
    aws: &Aws,
    identity: &Identity,
    old_properties: &serde_json::Value,
) -> Option<String> {
    let old = AmiSpec::parse(old_properties).ok()?;
    match crate::engine::update::built_from(aws, identity, fingerprint::of_request(&old)).await {
        Ok(images) => images.into_iter().max_by_key(|i| i.created).map(|i| i.id),
        Err(error) => {
            tracing::warn!(problem = %error, "could not look for the image of the previous properties");
            None
        }
    }
}

/// Where the answers of a request of the resource that builds go. A Create or Update: the
/// outcome is signalled to the wait condition's handle (the `url` an answer is sent to), and, when
/// CloudFormation still waits for this delivery (`responding`: the first invocation, until it is
/// told), CloudFormation gets the outcome too, or the [`acknowledgement`] before the first
/// hand-over. A Delete: CloudFormation's response. Always under the logical id CloudFormation
/// sent, with the resource's own physical id.
pub(super) struct Reply<'a, S> {
    sink: &'a S,
    request: &'a Request,
    image_resource: &'a str,
    responding: AtomicBool,
}

impl<'a, S: ResponseSink> Reply<'a, S> {
    /// `first`: this invocation is a delivery's first (not a hand-over's).
    pub(super) fn new(
        sink: &'a S,
        request: &'a Request,
        image_resource: &'a str,
        first: bool,
    ) -> Self {
        Reply {
            sink,
            request,
            image_resource,
            responding: AtomicBool::new(first),
        }
    }

    fn signals(&self) -> bool {
        !matches!(self.request.operation, Operation::Delete { .. })
    }

    /// The build's answer as CloudFormation's response for the resource that builds.
    fn as_response(&self, answer: &Response) -> Response {
        Response {
            logical_resource_id: self.request.identity.logical_id.clone(),
            physical_resource_id: physical_id_for(self.request, answer.status),
            data: Default::default(),
            ..answer.clone()
        }
    }
}

impl<S: ResponseSink> ResponseSink for Reply<'_, S> {
    fn send(
        &self,
        url: &str,
        answer: &Response,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        let url = url.to_owned();
        let answer = answer.clone();
        async move {
            if !self.signals() {
                return self.sink.send(&url, &self.as_response(&answer)).await;
            }
            let told = match self.responding.swap(false, Ordering::SeqCst) {
                true => Some(
                    self.sink
                        .send(&self.request.response_url, &self.as_response(&answer))
                        .await,
                ),
                false => None,
            };
            let signalled = self.sink.send(&url, &answer.into_signal()).await;
            match (told, signalled) {
                // CloudFormation has the outcome: a signal nobody waits for any more (a rollback
                // signals the previous handle, whose wait completed) is only logged.
                (Some(Ok(())), Err(error)) => {
                    tracing::warn!(problem = %error, "the wait condition could not be signalled");
                    Ok(())
                }
                (Some(Err(error)), _) | (_, Err(error)) => Err(error),
                _ => Ok(()),
            }
        }
    }

    async fn before_hand_over(&self) {
        if self.signals() && self.responding.swap(false, Ordering::SeqCst) {
            let ack = acknowledgement(self.request, self.image_resource);
            if let Err(error) = self.sink.send(&self.request.response_url, &ack).await {
                tracing::error!(problem = %error, "CloudFormation could not be told the build goes on; it times the resource out, and its rollback stops the build");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(operation: Operation) -> Request {
        Request {
            operation,
            identity: Identity {
                stack_id: "arn:aws:cloudformation:us-east-1:123456789012:stack/s/1".into(),
                logical_id: "AmiBuild".into(),
                request_id: "r-1".into(),
            },
            response_url: "https://cloudformation-custom-resource-response.invalid/r".into(),
            properties: serde_json::json!({"SignalUrl": "https://handle.invalid/h", "ImageResource": "Ami"}),
        }
    }

    #[test]
    fn the_resource_that_builds_keeps_one_physical_id() {
        let create = acknowledgement(&request(Operation::Create), "Ami");
        assert!(is_build_physical_id(&create.physical_resource_id));
        assert_eq!(create.logical_resource_id, "AmiBuild");
        assert_eq!(create.status, Status::Success);
        let update = request(Operation::Update {
            physical_id: create.physical_resource_id.clone(),
            old_properties: serde_json::json!({}),
        });
        assert_eq!(
            acknowledgement(&update, "Ami").physical_resource_id,
            create.physical_resource_id
        );
        assert_eq!(
            physical_id_for(&update, Status::Failed),
            create.physical_resource_id
        );
        // A failed Create is answered as a short build's: its Delete then touches nothing.
        assert!(cfn::is_failed_create_physical_id(&physical_id_for(
            &request(Operation::Create),
            Status::Failed
        )));
        assert_eq!(
            signalling(&request(Operation::Create)),
            Some(("https://handle.invalid/h".into(), "Ami".into()))
        );
    }
}
