//! Notes as text for a terminal.
//!
//! ```text
//!  0..11  frame 1             text, FIN, masked, 5-byte payload
//!           A whole text message in one frame. Masked, so sent by a client.
//!   0..1    FIN               1
//!             Set: this frame ends its message (RFC 6455 §5.2); …
//!   2..6    masking key       37 fa 21 3d
//! ```
//!
//! Each note is one line: its byte range in a column of its own, then its label indented by
//! depth, then its value, aligned with its siblings' values; its explanation follows on
//! the next lines, wrapped, under the label.

use std::fmt::Write as _;

use super::Note;

/// Total width explanations are wrapped to.
const WIDTH: usize = 100;
/// Labels longer than this push their value right instead of widening the column.
const MAX_LABEL_COLUMN: usize = 26;

/// Renders notes as an indented, aligned text tree, explanations included.
pub fn render_text(notes: &[Note]) -> String {
    render(notes, true)
}

/// Renders notes like [`render_text`] without the explanations: one line per note, for
/// following a long exchange once its parts are familiar.
pub fn render_text_brief(notes: &[Note]) -> String {
    render(notes, false)
}

fn render(notes: &[Note], explain: bool) -> String {
    let range_width = notes.iter().map(widest_range).max().unwrap_or(0);
    let mut out = String::new();
    for note in notes {
        write_note(&mut out, note, 0, range_width, label_column(notes), explain);
    }
    out
}

fn range_text(note: &Note) -> String {
    match note.bytes {
        Some((start, end)) => format!("{start}..{end}"),
        None => String::new(),
    }
}

fn widest_range(note: &Note) -> usize {
    let own = range_text(note).len();
    note.children.iter().map(widest_range).fold(own, usize::max)
}

fn label_column(siblings: &[Note]) -> usize {
    siblings
        .iter()
        .map(|n| n.label.chars().count())
        .filter(|&w| w <= MAX_LABEL_COLUMN)
        .max()
        .unwrap_or(0)
}

fn write_note(
    out: &mut String,
    note: &Note,
    depth: usize,
    range_width: usize,
    label_width: usize,
    explain: bool,
) {
    let indent = "  ".repeat(depth);
    let line = format!(
        "{:>range_width$}  {indent}{:<label_width$}  {}",
        range_text(note),
        note.label,
        note.value,
    );
    out.push_str(line.trim_end());
    out.push('\n');
    if explain && !note.explain.is_empty() {
        let margin = range_width + 2 + indent.len() + 2;
        let room = WIDTH.saturating_sub(margin).max(40);
        for wrapped in wrap(&note.explain, room) {
            let _ = writeln!(out, "{:margin$}{wrapped}", "");
        }
    }
    let children_labels = label_column(&note.children);
    for child in &note.children {
        write_note(out, child, depth + 1, range_width, children_labels, explain);
    }
}

/// Greedy word wrap; a word longer than the line gets a line of its own.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::super::annotate_ws_frames;
    use super::*;

    #[test]
    fn the_tree_is_aligned_and_explained() {
        let frames = annotate_ws_frames(&[
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ]);
        let text = render_text(&frames.frames);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "0..11  frame 1  text, FIN, masked, 5-byte payload"
        );
        assert!(
            lines[1].starts_with("         A whole text message"),
            "{text}"
        );
        let field = |name: &str| {
            *lines
                .iter()
                .find(|l| l.split_whitespace().nth(1) == Some(name))
                .unwrap()
        };
        let (key, fin) = (field("masking"), field("FIN"));
        // Values of siblings start in the same column.
        let column = key.find("37 fa").unwrap();
        assert_eq!(&fin[column..], "1", "{text}");
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
        let brief = render_text_brief(&frames.frames);
        assert!(!brief.contains("RFC"));
        assert_eq!(brief.lines().count(), 1 + 10);
    }

    #[test]
    fn wrapping() {
        assert_eq!(wrap("a bb ccc", 4), ["a bb", "ccc"]);
        assert_eq!(wrap("abcdef", 3), ["abcdef"]);
        assert!(wrap("", 10).is_empty());
    }
}
