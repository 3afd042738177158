//! Event notes within what events.k8s.io accepts.

/// The longest note events.k8s.io/v1 accepts, in bytes (`note` is validated to at most 1 KiB).
pub const MAX_NOTE_BYTES: usize = 1024;

const ELLIPSIS: char = '…';

/// `note` cut to at most [`MAX_NOTE_BYTES`] bytes on a character boundary, ending in an ellipsis
/// when it was cut. Longer notes make the apiserver refuse the whole event.
pub fn truncate_note(note: String) -> String {
    if note.len() <= MAX_NOTE_BYTES {
        return note;
    }
    let budget = MAX_NOTE_BYTES - ELLIPSIS.len_utf8();
    let mut end = budget;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    let mut cut = note;
    cut.truncate(end);
    cut.push(ELLIPSIS);
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_notes_are_kept_and_long_ones_cut_with_an_ellipsis() {
        assert_eq!(truncate_note("short".into()), "short");
        let exact = "a".repeat(MAX_NOTE_BYTES);
        assert_eq!(truncate_note(exact.clone()), exact);

        let long = format!("https://auth.example.com/authorize?{}", "x".repeat(3000));
        let cut = truncate_note(long.clone());
        assert!(cut.len() <= MAX_NOTE_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(long.starts_with(cut.trim_end_matches('…')));

        // Multi-byte characters are never split.
        let wide = "é".repeat(1000);
        let cut = truncate_note(wide);
        assert!(cut.len() <= MAX_NOTE_BYTES);
        assert!(cut.ends_with('…'));
        assert!(cut.trim_end_matches('…').chars().all(|c| c == 'é'));
    }
}
