//! `parapet policy fmt`: Cedar's own formatter, so every team's files look the same and diffs
//! show only what changed.

use cedar_policy_formatter::{Config, policies_str_to_pretty};

use crate::error::{Error, Result};

/// Line width of formatted policies.
const LINE_WIDTH: usize = 100;

/// Formats the text of one `.cedar` file (comments kept). A file that does not parse is
/// refused with Cedar's message; nothing is half-formatted.
pub fn format_policies(text: &str) -> Result<String> {
    let config = Config {
        line_width: LINE_WIDTH,
        indent_width: 2,
    };
    policies_str_to_pretty(text, &config).map_err(|report| {
        let detailed = cedar_policy::ffi::DetailedError::from(report);
        let mut msg = detailed.message;
        for related in detailed.related {
            msg.push_str(": ");
            msg.push_str(&related.message);
        }
        Error::PolicySetInvalid(vec![msg])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_is_idempotent() {
        let src = "// keep me\n@id(\"a\") @reason(\"r\") forbid(principal,action==Parapet::Action::\"raw_hash\",resource) when {   context.step_up   };\n";
        let once = format_policies(src).unwrap();
        assert!(once.contains("// keep me"));
        assert!(once.contains("@id(\"a\")"));
        assert_eq!(format_policies(&once).unwrap(), once);
    }

    #[test]
    fn refuses_what_does_not_parse() {
        assert!(matches!(
            format_policies("permit(principal, action, resource"),
            Err(Error::PolicySetInvalid(_))
        ));
    }
}
