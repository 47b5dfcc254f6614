//! Cedar's errors carry their source spans through `miette`; `cedar_policy::ffi::DetailedError`
//! exposes them as plain offsets, which is all `file:line` reporting needs.

use cedar_policy::ffi::DetailedError;

/// The message, with Cedar's help text appended when it has one.
pub(crate) fn detailed<T>(e: &T) -> String
where
    for<'a> DetailedError: From<&'a T>,
{
    message(&DetailedError::from(e))
}

/// The message and the byte offset of its first labelled span, if any.
pub(crate) fn located<T>(e: &T) -> (String, Option<usize>)
where
    for<'a> DetailedError: From<&'a T>,
{
    let d = DetailedError::from(e);
    let at = d.source_locations.first().map(|l| l.loc.start);
    (message(&d), at)
}

fn message(d: &DetailedError) -> String {
    match &d.help {
        Some(h) if !h.is_empty() => format!("{} (help: {h})", d.message),
        _ => d.message.clone(),
    }
}

/// 1-based line of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()
        .iter()
        .take(end)
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_based() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
    }
}
