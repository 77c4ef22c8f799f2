//! What a request that succeeded comes to, in the engine's terms; the handler makes it
//! CloudFormation's SUCCESS (`handler::success_outcome`), as it makes a [`Failed`](super::Failed)
//! its FAILED.

use std::collections::BTreeMap;

/// The resource as it now is: its id, the attributes `Fn::GetAtt` reads, and a note for the
/// stack's events, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// The image the resource is (its physical id); for a Delete, the id CloudFormation named.
    pub id: String,
    pub attributes: BTreeMap<String, String>,
    /// Shown in the stack's events: what an operation did beside its answer.
    pub note: Option<String>,
}

impl Done {
    pub fn new(id: impl Into<String>, attributes: BTreeMap<String, String>) -> Done {
        Done {
            id: id.into(),
            attributes,
            note: None,
        }
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Done {
        self.note = Some(note.into());
        self
    }
}
