//! What a failed call says: the operation, AWS's error code and its message; and the codes the
//! product acts on, each named once ([`Code`]).

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation} failed: {}{message}", code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default())]
pub struct AwsError {
    pub operation: &'static str,
    /// AWS's error code as it came, kept whole for the Reason; [`AwsError::is`] classifies it.
    pub code: Option<String>,
    pub message: String,
}

/// The error codes the product tells apart. EC2 models none of its errors as a typed error in
/// the SDK (they all come as the unhandled variant with a code), so its codes are matched here,
/// by the names "Error codes for the Amazon EC2 API" gives them
/// (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html>). Errors the SDK
/// does model (SSM's `ParameterNotFound`, `ParameterAlreadyExists`, `InvocationDoesNotExist`)
/// are matched through the SDK's typed errors where the call is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Refused for its rate: EC2's `RequestLimitExceeded`
    /// (<https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html>), the JSON
    /// services' `ThrottlingException`, and the other codes the SDK's retry classifier treats
    /// as throttling. Worth trying again later.
    Throttled,
    /// The id or name is not known (or not yet: EC2 is eventually consistent): any
    /// `*.NotFound`, a malformed id (`InvalidInstanceID.Malformed`), and
    /// `InvalidAMIID.Unavailable` for an image that is gone.
    NotFound,
    /// `InvalidSnapshot.InUse`: a snapshot still registered with an image.
    SnapshotInUse,
    /// `InvalidAMIName.Duplicate`: the account already has an image of that name in the region.
    ImageNameTaken,
    /// `InvalidInstanceType` (or a code that starts with it): EC2 has no such instance type (in
    /// this region).
    UnknownInstanceType,
    /// `UnsupportedOperation`, `InvalidParameterCombination`, `InvalidParameterValue`: a
    /// parameter EC2 will not take with the others (the way it refuses `Latest` on an instance
    /// type that is not built on Nitro).
    Unsupported,
}

impl Code {
    /// The class of an AWS error code, if the product tells it apart.
    pub fn of(code: &str) -> Option<Code> {
        Some(match code {
            "RequestLimitExceeded"
            | "ThrottlingException"
            | "Throttling"
            | "ThrottledException"
            | "RequestThrottledException"
            | "TooManyRequestsException"
            | "ProvisionedThroughputExceededException"
            | "TransactionInProgressException"
            | "RequestThrottled"
            | "SlowDown"
            | "PriorRequestNotComplete"
            | "EC2ThrottledException"
            | "BandwidthLimitExceeded" => Code::Throttled,
            "InvalidSnapshot.InUse" => Code::SnapshotInUse,
            "InvalidAMIName.Duplicate" => Code::ImageNameTaken,
            // EC2 documents the bare code; moto (the local AWS) answers with a suffix.
            _ if code.starts_with("InvalidInstanceType") => Code::UnknownInstanceType,
            "UnsupportedOperation" | "InvalidParameterCombination" | "InvalidParameterValue" => {
                Code::Unsupported
            }
            "InvalidAMIID.Unavailable" => Code::NotFound,
            _ if code.contains("NotFound") || code.ends_with(".Malformed") => Code::NotFound,
            _ => return None,
        })
    }
}

impl AwsError {
    /// Whether AWS answered with a code of this class.
    pub fn is(&self, code: Code) -> bool {
        self.code.as_deref().and_then(Code::of) == Some(code)
    }
    /// [`Code::Throttled`], after the SDK's own retries.
    pub fn is_throttled(&self) -> bool {
        self.is(Code::Throttled)
    }
    /// [`Code::NotFound`].
    pub fn is_not_found(&self) -> bool {
        self.is(Code::NotFound)
    }
    /// A failure the product itself found in an answer (one that lacks what it must carry).
    pub(super) fn in_answer(operation: &'static str, message: impl Into<String>) -> AwsError {
        AwsError {
            operation,
            code: None,
            message: message.into(),
        }
    }

    pub(super) fn from_sdk<E, R>(operation: &'static str, error: SdkError<E, R>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let code = error.code().map(str::to_owned);
        // AWS support asks for the request id; the Reason has no room for it, the log does.
        if let Some(request_id) = error.meta().extra("aws_request_id") {
            tracing::debug!(operation, code, request_id, "AWS refused the call");
        }
        let message = match error.message() {
            Some(message) => without_encoded_failure(message),
            None => aws_smithy_types::error::display::DisplayErrorContext(&error).to_string(),
        };
        AwsError {
            operation,
            code,
            message,
        }
    }
}

/// EC2's UnauthorizedOperation ends with an encoded authorization failure message of a thousand
/// characters or more, readable only through sts:DecodeAuthorizationMessage: dropped, so that a
/// Reason (4,096 bytes in all) keeps room for what the build left behind. The readable part
/// names the action and the resource.
fn without_encoded_failure(message: &str) -> String {
    const MARK: &str = "Encoded authorization failure message:";
    match message.find(MARK) {
        Some(at) => {
            // Kept in the log: sts:DecodeAuthorizationMessage tells which statement or condition
            // refused the call.
            tracing::warn!(message, "AWS refused the call");
            format!(
                "{} (encoded authorization failure message omitted; it is in the log)",
                message[..at].trim_end()
            )
        }
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoded_authorization_message_is_dropped_and_the_readable_part_kept() {
        let ec2 = "You are not authorized to perform this operation. User: arn:aws:sts::1:assumed-role/r/f is not authorized to perform: ec2:CreateImage on resource: arn:aws:ec2:us-east-1::snapshot/* because no identity-based policy allows the ec2:CreateImage action. Encoded authorization failure message: AbC123xyz";
        let kept = without_encoded_failure(ec2);
        assert!(kept.contains("ec2:CreateImage on resource: arn:aws:ec2:us-east-1::snapshot/*"));
        assert!(!kept.contains("AbC123xyz"), "{kept}");
        assert!(kept.contains("(encoded authorization failure message omitted"));
        assert_eq!(without_encoded_failure("plain"), "plain");
    }

    #[test]
    fn codes_are_classified_once() {
        let cases = [
            ("RequestLimitExceeded", Some(Code::Throttled)),
            ("ThrottlingException", Some(Code::Throttled)),
            ("InvalidInstanceID.NotFound", Some(Code::NotFound)),
            ("InvalidAMIID.Malformed", Some(Code::NotFound)),
            ("InvalidAMIID.Unavailable", Some(Code::NotFound)),
            ("ParameterNotFound", Some(Code::NotFound)),
            ("InvalidSnapshot.InUse", Some(Code::SnapshotInUse)),
            ("InvalidAMIName.Duplicate", Some(Code::ImageNameTaken)),
            ("InvalidInstanceType", Some(Code::UnknownInstanceType)),
            (
                "InvalidInstanceType.NotFound",
                Some(Code::UnknownInstanceType),
            ),
            ("InvalidParameterCombination", Some(Code::Unsupported)),
            ("UnauthorizedOperation", None),
            ("InsufficientInstanceCapacity", None),
        ];
        for (code, class) in cases {
            assert_eq!(Code::of(code), class, "{code}");
            let error = AwsError {
                operation: "ec2:X",
                code: Some(code.into()),
                message: String::new(),
            };
            assert_eq!(
                class.is_some_and(|c| error.is(c)),
                class.is_some(),
                "{code}"
            );
        }
        assert!(!AwsError::in_answer("ec2:X", "m").is_not_found());
    }
}
