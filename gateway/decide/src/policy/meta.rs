//! One policy of a loaded set, with what the project's annotations say about it: what loading
//! produces and slicing, deciding and consent read.

use cedar_policy::Policy;

use super::{BASIC_SCOPE, Effect};

/// One policy of the set, with what our annotations say about it.
#[derive(Debug, Clone)]
pub struct PolicyMeta {
    /// `@id`; also the Cedar policy id, so Cedar's own messages name it.
    pub id: String,
    /// `Permit` or `Forbid`.
    pub effect: Effect,
    /// `@reason`.
    pub reason: String,
    /// `@scope` of a permit; `None` means the required scope `basic`. Always `None` on forbids.
    pub scope: Option<String>,
    /// `@step_up` on a forbid: a step-up assertion may lift it (docs/architecture.md §6).
    pub step_up: bool,
    /// Path relative to the project root, e.g. `policies/base.cedar`.
    pub file: String,
    pub line: usize,
    /// The policy's text exactly as written (consent binds to it).
    pub text: String,
    pub(crate) policy: Policy,
}

impl PolicyMeta {
    /// The consent scope a permit belongs to; `None` for forbids.
    pub fn effective_scope(&self) -> Option<&str> {
        match self.effect {
            Effect::Permit => Some(self.scope.as_deref().unwrap_or(BASIC_SCOPE)),
            Effect::Forbid | Effect::DefaultDeny | Effect::ScopeNotApproved => None,
        }
    }

    /// Forbids always apply; a permit only when the user approved its scope.
    pub(crate) fn in_scopes(&self, scopes: &[String]) -> bool {
        match self.effective_scope() {
            None => true,
            Some(s) => scopes.iter().any(|a| a == s),
        }
    }
}
