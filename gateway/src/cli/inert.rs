//! Text that others chose, made inert before it reaches a terminal.
//!
//! A request's reason is the requester's to write, and it becomes its grant's reason; SQL,
//! typed commands, kill reasons and client names are likewise chosen by someone other than
//! the operator or reviewer reading them. Written raw, a control character in them moves
//! the cursor, erases or rewrites earlier lines, retitles the window, or starts a table row
//! of its own; a bidirectional override reorders what follows it. Every human-readable
//! output of the CLI (tables, `audit search`, `replay`) passes such text through here, so
//! there is one definition of what is escaped. `--json` output needs none of this: JSON
//! escapes the C0 controls, and the reader's parser sees the value whole.

/// Is `c` one a terminal may act on: a C0 or C1 control (newline, CR and tab included),
/// DEL, or a bidirectional embedding, override or isolate.
fn acts_on_terminal(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` on one line, as a table cell or a one-line message: every character a terminal may
/// act on, newline and tab included, is written as a Rust escape (`\u{1b}`, `\u{a}`).
pub(crate) fn line(s: &str) -> String {
    escape(s, None)
}

/// `s` over several lines, as a statement or command in `replay`: as [`line`], except that a
/// newline stays a line break with `indent` in front of the next line (so nothing can start
/// a line of the output's own) and a tab stays a tab.
pub(crate) fn lines(s: &str, indent: &str) -> String {
    escape(s, Some(indent))
}

fn escape(s: &str, indent: Option<&str>) -> String {
    if !s.chars().any(acts_on_terminal) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match (c, indent) {
            ('\n', Some(indent)) => {
                out.push('\n');
                out.push_str(indent);
            }
            ('\t', Some(_)) => out.push(c),
            (c, _) if acts_on_terminal(c) => out.extend(c.escape_unicode()),
            (c, _) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind of character a terminal acts on, and how each form shows it.
    #[test]
    fn every_control_and_bidi_override_is_escaped() {
        let cases = [
            ("plain text", "plain text", "plain text"),
            ("a\u{1b}[2Jb", r"a\u{1b}[2Jb", r"a\u{1b}[2Jb"),
            (
                "x\u{1b}]0;owned\u{7}",
                r"x\u{1b}]0;owned\u{7}",
                r"x\u{1b}]0;owned\u{7}",
            ),
            ("a\nb", r"a\u{a}b", "a\n  b"),
            ("a\r\nb", r"a\u{d}\u{a}b", "a\\u{d}\n  b"),
            ("a\tb", r"a\u{9}b", "a\tb"),
            ("del\u{7f}", r"del\u{7f}", r"del\u{7f}"),
            ("csi\u{9b}31m", r"csi\u{9b}31m", r"csi\u{9b}31m"),
            ("nel\u{85}", r"nel\u{85}", r"nel\u{85}"),
            ("\u{202e}gnp.exe", r"\u{202e}gnp.exe", r"\u{202e}gnp.exe"),
            (
                "\u{2066}x\u{2069}",
                r"\u{2066}x\u{2069}",
                r"\u{2066}x\u{2069}",
            ),
            ("| fake | row |", "| fake | row |", "| fake | row |"),
            ("naïve ☃", "naïve ☃", "naïve ☃"),
        ];
        for (raw, one_line, several) in cases {
            assert_eq!(line(raw), one_line, "{raw:?}");
            assert_eq!(lines(raw, "  "), several, "{raw:?}");
            assert!(!line(raw).chars().any(acts_on_terminal), "{raw:?}");
        }
    }

    /// Escaping twice changes nothing more: a cell made inert once can go through a table
    /// that makes its cells inert.
    #[test]
    fn escaped_text_is_left_as_it_is() {
        let once = line("\u{1b}[2J\n\u{202e}");
        assert_eq!(line(&once), once);
    }
}
