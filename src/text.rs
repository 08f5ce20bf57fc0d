//! Text from outside (file names, paths, messages from a server) as the
//! terminal shows it: a name may hold a newline or an escape code, and printed
//! raw it could forge a line of output or drive the terminal.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use idb_engine::escape_controls;

/// `path` with every control character written as an escape: `\n`, `\t`, `\r`
/// by name, the others as `\xNN` (like `\x1b`, `\x7f`; C1 controls and the
/// invisible characters that reorder or hide text as `\u{9b}`), and bytes that
/// are not UTF-8 as `\xNN`. A backslash is left as it is, so an ordinary path
/// prints unchanged. (The engine's [`escape_controls`], which also cleans what
/// servers say.)
pub fn escaped(path: &Path) -> String {
    let mut out = String::with_capacity(path.as_os_str().len());
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        out.push_str(&escape_controls(chunk.valid()));
        for byte in chunk.invalid() {
            write!(out, "\\x{byte:02x}").expect("write to a String");
        }
    }
    out
}

/// An engine message about one of `paths` (it starts with the path, shown
/// lossily: a byte that is not UTF-8 is already U+FFFD there) escaped, with
/// that path shown as [`escaped`] shows it, `\xNN` and all.
pub fn escaped_message<'a>(message: &str, paths: impl IntoIterator<Item = &'a Path>) -> String {
    // The longest: of `x` and `x\xff`, a message about the second starts
    // with both.
    let found = paths
        .into_iter()
        .filter_map(|path| {
            let lossy = path.to_string_lossy();
            let rest = message.strip_prefix(lossy.as_ref())?;
            Some((lossy.len(), path, rest))
        })
        .max_by_key(|&(len, _, _)| len);
    match found {
        Some((_, path, rest)) => format!("{}{}", escaped(path), escape(rest)),
        None => escape(message).into_owned(),
    }
}

/// `text` escaped as [`escaped`] does; borrowed when there is nothing to escape.
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_controls(text)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    fn shown(bytes: &[u8]) -> String {
        escaped(Path::new(OsStr::from_bytes(bytes)))
    }

    #[test]
    fn an_ordinary_path_prints_unchanged() {
        assert_eq!(shown(b"data/run 1/caf\xc3\xa9.h5"), "data/run 1/café.h5");
    }

    #[test]
    fn a_backslash_is_left_as_it_is() {
        assert_eq!(shown(b"back\\slash.txt"), "back\\slash.txt");
    }

    #[test]
    fn newline_tab_and_carriage_return_are_named() {
        assert_eq!(shown(b"a\nb\tc\rd"), "a\\nb\\tc\\rd");
    }

    #[test]
    fn escape_delete_and_other_controls_are_hex() {
        assert_eq!(shown(b"\x1b[31mred\x7f\x01"), "\\x1b[31mred\\x7f\\x01");
    }

    #[test]
    fn c1_controls_are_escaped() {
        // U+009B is a one-character CSI on some terminals.
        assert_eq!(shown("a\u{9b}b".as_bytes()), "a\\u{9b}b");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_hex() {
        assert_eq!(shown(b"bad\xff\xfe.bin"), "bad\\xff\\xfe.bin");
        // A truncated multi-byte sequence, then valid text.
        assert_eq!(shown(b"x\xc3y"), "x\\xc3y");
    }

    #[test]
    fn a_message_about_a_path_shows_its_bytes_that_are_not_utf8_as_hex() {
        use std::ffi::OsStr;
        let bad = Path::new(OsStr::from_bytes(b"dir\xfe/bad\xff.txt"));
        let other = Path::new("other.txt");
        let message = format!("{}: no such file\n", bad.display());
        assert_eq!(
            escaped_message(&message, [other, bad]),
            "dir\\xfe/bad\\xff.txt: no such file\\n"
        );
        // The longest path it starts with.
        let short = Path::new("dir");
        assert_eq!(
            escaped_message(&message, [short, bad]),
            "dir\\xfe/bad\\xff.txt: no such file\\n"
        );
        // About none of them: escaped as any text.
        assert_eq!(escaped_message("x\ny", [other]), "x\\ny");
    }

    #[test]
    fn no_escaped_path_holds_a_control_character() {
        let every_byte: Vec<u8> = (1..=255).collect();
        let text = shown(&every_byte);
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }

    #[test]
    fn text_that_reorders_or_hides_itself_is_escaped() {
        // A right-to-left override would show `exe.txt` as `txt.exe`.
        assert_eq!(shown("a\u{202e}txt.exe".as_bytes()), "a\\u{202e}txt.exe");
        assert_eq!(
            escape("zero\u{200b}width\u{2066}"),
            "zero\\u{200b}width\\u{2066}"
        );
    }

    #[test]
    fn text_is_escaped_like_a_path_and_borrowed_when_clean() {
        assert!(matches!(escape("plain ünïcode.h5"), Cow::Borrowed(_)));
        assert_eq!(
            escape("x (1 bytes)\nverified fake.bin"),
            "x (1 bytes)\\nverified fake.bin"
        );
        assert_eq!(escape("a\u{1b}[31m\u{9b}"), "a\\x1b[31m\\u{9b}");
    }
}
