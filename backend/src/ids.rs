//! Object ids: a type prefix and a UUIDv7, so ids sort by creation time (cursor pagination relies
//! on it) and say what they name.

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Whether `id` has the shape of an id with `prefix`; anything else cannot exist and is answered
/// without a database lookup.
pub fn is_well_formed(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|hex| {
            hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation_and_validate() {
        let first = new_id("ses");
        let second = new_id("ses");
        assert!(first < second);
        assert!(is_well_formed(&first, "ses"));
        assert!(!is_well_formed(&first, "key"));
        assert!(!is_well_formed("ses_../../etc", "ses"));
        // One spelling only, so cursors compare the same on every database.
        assert!(!is_well_formed(
            &first.to_ascii_uppercase().replace("SES", "ses"),
            "ses"
        ));
    }
}
