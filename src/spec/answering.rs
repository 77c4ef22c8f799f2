//! How a resource answers CloudFormation: itself (a build of at most 55 minutes), or through a
//! wait condition, as the two `Custom::EcsAmi` resources the EcsAmi macro makes of one
//! (`crate::cfn::transform`): `SignalUrl` and `ImageResource` on the resource that builds,
//! `Signal` on the one that holds the image.

use serde_json::Value;

use super::fields::Problems;
use super::ids::is_ami_id;

/// The longest `TimeoutMinutes` of a build answered through a wait condition: its `Timeout` is
/// at most 43,200 s (12 hours), and 10 minutes are kept for cleanup before the FAILURE signal.
pub const MAX_LONG_BUILD_MINUTES: u32 = 710;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Answering {
    /// The custom resource's own answer, within its `ServiceTimeout`.
    #[default]
    Itself,
    /// The macro's `XBuild` resource: its Create or Update is acknowledged at once, the build
    /// carries on in hand-overs under the logical id of the resource that holds the image
    /// (`image_resource`), and its end is signalled to the wait condition handle's `url`.
    Signal { url: String, image_resource: String },
    /// The macro's `X` resource: answers with the image the wait condition's data names,
    /// building nothing (`request_id`: the signal's `UniqueId`, the building request).
    Signalled {
        image_id: String,
        request_id: String,
    },
}

impl Answering {
    /// Whether the build is answered through a wait condition (either resource).
    pub fn is_long(&self) -> bool {
        !matches!(self, Answering::Itself)
    }
}

/// The three properties as given (each absent, or a string), read into an [`Answering`].
pub(super) fn parse(
    signal_url: Option<String>,
    image_resource: Option<String>,
    signal: Option<String>,
    problems: &mut Problems,
) -> Answering {
    const BY_MACRO: &str = "set by the EcsAmi macro (Transform), not by hand";
    match (signal_url, image_resource, signal) {
        (None, None, None) => Answering::Itself,
        (Some(url), Some(image_resource), None) => {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                problems.add(
                    "SignalUrl",
                    format!("must be a wait condition handle's URL (!Ref of an AWS::CloudFormation::WaitConditionHandle), {BY_MACRO}"),
                );
            }
            if !is_logical_id(&image_resource) {
                problems.add(
                    "ImageResource",
                    format!("{image_resource:?} is not a logical id (1 to 255 letters and digits), {BY_MACRO}"),
                );
            }
            Answering::Signal {
                url,
                image_resource,
            }
        }
        (None, None, Some(data)) => match signalled_image(&data) {
            Ok((request_id, image_id)) => Answering::Signalled {
                image_id,
                request_id,
            },
            Err(problem) => {
                problems.add("Signal", problem);
                Answering::Itself
            }
        },
        (url, resource, signal) => {
            let given: Vec<&str> = [
                url.as_ref().map(|_| "SignalUrl"),
                resource.as_ref().map(|_| "ImageResource"),
                signal.as_ref().map(|_| "Signal"),
            ]
            .into_iter()
            .flatten()
            .collect();
            problems.add(
                given[0],
                format!("{} given: SignalUrl goes with ImageResource on the resource that builds, Signal alone on the resource that holds the image, both {BY_MACRO}", given.join(", ")),
            );
            Answering::Itself
        }
    }
}

/// A wait condition's `Data` (`!GetAtt Wait.Data`): a JSON object of each signal's `UniqueId` to
/// its `Data`. The build signals once, its request id to the AMI's id.
fn signalled_image(data: &str) -> Result<(String, String), String> {
    let parsed: Value = serde_json::from_str(data).map_err(|_| {
        format!("{data:?} is not a wait condition's data (a JSON object of signal ids to data)")
    })?;
    let Some(signals) = parsed.as_object() else {
        return Err(format!(
            "{data:?} is not a wait condition's data (a JSON object of signal ids to data)"
        ));
    };
    // One signal, from the build; a handle that also got a later rollback's signal (of the same
    // image) holds more, all naming one AMI.
    let mut images = signals.iter().map(|(request_id, data)| match data {
        Value::String(image) if is_ami_id(image) => Ok((request_id.clone(), image.clone())),
        other => Err(format!(
            "the wait condition's signal carries {other}, not an AMI id"
        )),
    });
    let first = images
        .next()
        .ok_or("the wait condition received no signal")??;
    for other in images {
        let (_, image) = other?;
        if image != first.1 {
            return Err(format!(
                "the wait condition's signals name two AMIs, {} and {image}",
                first.1
            ));
        }
    }
    Ok(first)
}

/// A CloudFormation logical id: 1 to 255 ASCII letters and digits.
fn is_logical_id(text: &str) -> bool {
    (1..=255).contains(&text.len()) && text.chars().all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(
        url: Option<&str>,
        resource: Option<&str>,
        signal: Option<&str>,
    ) -> (Answering, Vec<String>) {
        let mut problems = Problems::default();
        let answering = parse(
            url.map(str::to_owned),
            resource.map(str::to_owned),
            signal.map(str::to_owned),
            &mut problems,
        );
        (
            answering,
            problems
                .into_result(|| ())
                .err()
                .map(|e| e.problems)
                .unwrap_or_default(),
        )
    }

    #[test]
    fn the_macro_s_two_resources_and_a_plain_one() {
        assert_eq!(parsed(None, None, None), (Answering::Itself, vec![]));
        let (start, problems) = parsed(Some("https://h.s3.amazonaws.com/x?sig"), Some("Ami"), None);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            start,
            Answering::Signal {
                url: "https://h.s3.amazonaws.com/x?sig".into(),
                image_resource: "Ami".into()
            }
        );
        let (result, problems) = parsed(None, None, Some(r#"{"req-1":"ami-0123456789abcdef0"}"#));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            result,
            Answering::Signalled {
                image_id: "ami-0123456789abcdef0".into(),
                request_id: "req-1".into()
            }
        );
        assert!(result.is_long() && !Answering::Itself.is_long());
        // A completed wait's handle that also got a rollback's signal of the same image.
        let (again, problems) = parsed(
            None,
            None,
            Some(r#"{"req-1":"ami-0123456789abcdef0","req-9":"ami-0123456789abcdef0"}"#),
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(again, result);
    }

    #[test]
    fn each_misuse_names_the_property() {
        let cases = [
            (
                Some("ftp://x"),
                Some("Ami"),
                None,
                "SignalUrl: must be a wait condition handle's URL",
            ),
            (
                Some("https://x"),
                Some("Ami-1"),
                None,
                "ImageResource: \"Ami-1\" is not a logical id",
            ),
            (
                Some("https://x"),
                None,
                None,
                "SignalUrl: SignalUrl given: SignalUrl goes with ImageResource",
            ),
            (
                None,
                Some("Ami"),
                Some("{}"),
                "ImageResource: ImageResource, Signal given: ",
            ),
            (
                None,
                None,
                Some("ami-0123456789abcdef0"),
                "Signal: \"ami-0123456789abcdef0\" is not a wait condition's data",
            ),
            (
                None,
                None,
                Some(r#"{"a":"ami-0123456789abcdef0","b":"ami-0123456789abcdef1"}"#),
                "Signal: the wait condition's signals name two AMIs, ami-0123456789abcdef0 and ami-0123456789abcdef1",
            ),
            (
                None,
                None,
                Some("{}"),
                "Signal: the wait condition received no signal",
            ),
            (
                None,
                None,
                Some(r#"{"a":"done"}"#),
                "Signal: the wait condition's signal carries \"done\", not an AMI id",
            ),
        ];
        for (url, resource, signal, expected) in cases {
            let (_, problems) = parsed(url, resource, signal);
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(
                problems[0].starts_with(expected),
                "{problems:?} vs {expected}"
            );
        }
    }
}
