//! Text from outside (file names, paths, server messages) made safe to print: a
//! newline, a carriage return or an escape code in a name must not forge a line
//! or drive the terminal.

use std::borrow::Cow;
use std::fmt::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `text` with every control character escaped (`\n`, `\r`, `\t`, `\x1b`,
/// `\x7f`, and the C1 range as `\u{9b}`); everything else as is.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// A path, escaped as [`escape`] does, with bytes that are not UTF-8 shown as
/// `\xNN`.
pub fn escaped(path: &Path) -> String {
    let mut out = String::new();
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            push_escaped(&mut out, c);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

fn needs_escape(c: char) -> bool {
    c.is_control()
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if c.is_ascii_control() => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(escape("plain name.h5"), "plain name.h5");
        assert!(matches!(escape("ünïcode"), Cow::Borrowed(_)));
        assert_eq!(
            escape("x (1 bytes)\nverified fake.bin"),
            "x (1 bytes)\\nverified fake.bin"
        );
        assert_eq!(
            escape("a\rb\tc\u{1b}[31md\u{7f}"),
            "a\\rb\\tc\\x1b[31md\\x7f"
        );
        assert_eq!(escape("csi\u{9b}"), "csi\\u{9b}");
        assert_eq!(escape("back\\slash"), "back\\slash");
    }

    #[test]
    fn paths_that_are_not_utf8_show_their_bytes() {
        let path = Path::new(OsStr::from_bytes(b"/tmp/a\xffb\n.bin"));
        assert_eq!(escaped(path), "/tmp/a\\xffb\\n.bin");
    }
}
