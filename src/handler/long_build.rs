//! Builds of up to 12 hours: the EcsAmi macro (`crate::cfn::transform`) makes of one
//! `Custom::EcsAmi` a resource that builds (`XBuild`: `SignalUrl`, `ImageResource`), a wait
//! condition and its handle, and the resource that holds the image (`X`: `Signal`). See
//! docs/internals/design-long-builds.md.
//!
//! The resource that builds is handled as the request of the resource that holds the image
//! ([`as_build`]): under its logical id, so that the image, its lease, its leftovers and its
//! Delete are that resource's as for a short build, and with the wait condition handle's URL as
//! where the answer goes ([`Reply`] makes it a signal). Its Create or Update is acknowledged at
//! once ([`acknowledgement`]), after the properties are checked and before anything is launched;
//! every delivery acknowledges again (the same content), and the recorded answer stays the
//! build's outcome, so that a later delivery repeats the signal, never the build.

use std::future::Future;

use crate::aws::{Aws, ImageState};
use crate::cfn::{Identity, Operation, Outcome, Request, Response, SinkError};
use crate::engine::tags::{TAG_PROPERTIES, resource_tags};
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

/// The SUCCESS a Create or Update of the resource that builds answers at once: the build goes
/// on, and its end reaches the wait condition.
pub(super) fn acknowledgement(request: &Request, image_resource: &str) -> Response {
    let physical_id = match &request.operation {
        Operation::Update { physical_id, .. } => physical_id.clone(),
        _ => build_physical_id(&request.identity),
    };
    let outcome = Outcome::success(physical_id, Default::default()).with_reason(format!(
        "build started as request {}; its end is signalled to the wait condition, and {image_resource} answers with the image",
        request.identity.request_id
    ));
    Response::new(&request.identity, outcome)
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
    let mut tags = resource_tags(identity);
    tags.insert(TAG_PROPERTIES.into(), fingerprint::of_request(&old));
    match aws.images_tagged(&tags).await {
        Ok(images) => images
            .into_iter()
            .filter(|i| i.state == ImageState::Available)
            .max_by_key(|i| i.created)
            .map(|i| i.id),
        Err(error) => {
            tracing::warn!(problem = %error, "could not look for the image of the previous properties");
            None
        }
    }
}

/// Where the build's answer goes: a signal to the wait condition handle (a Create or Update), or
/// CloudFormation's response (a Delete), in both cases under the logical id CloudFormation sent.
pub(super) struct Reply<'a, S> {
    pub sink: &'a S,
    pub logical_id: String,
    pub signal: bool,
}

impl<S: ResponseSink> ResponseSink for Reply<'_, S> {
    fn send(
        &self,
        url: &str,
        response: &Response,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        let mut response = Response {
            logical_resource_id: self.logical_id.clone(),
            ..response.clone()
        };
        if self.signal {
            response = response.into_signal();
        }
        let url = url.to_owned();
        async move { self.sink.send(&url, &response).await }
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
        assert_eq!(create.status, crate::cfn::Status::Success);
        let update = acknowledgement(
            &request(Operation::Update {
                physical_id: create.physical_resource_id.clone(),
                old_properties: serde_json::json!({}),
            }),
            "Ami",
        );
        assert_eq!(update.physical_resource_id, create.physical_resource_id);
        assert_eq!(
            signalling(&request(Operation::Create)),
            Some(("https://handle.invalid/h".into(), "Ami".into()))
        );
    }
}
