//! A local path in a journal or a receipt (JSON): as text when it is UTF-8,
//! else as the array of its bytes, so a file under a directory whose name is
//! not UTF-8 can be recorded too (JSON strings hold only Unicode). Files of
//! earlier versions hold text, which still reads.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a saved path is in JSON.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Saved<'a> {
    Text(std::borrow::Cow<'a, str>),
    Bytes(Vec<u8>),
}

pub(crate) fn serialize<S: Serializer>(path: &Path, out: S) -> Result<S::Ok, S::Error> {
    match path.to_str() {
        Some(text) => Saved::Text(text.into()),
        None => Saved::Bytes(path.as_os_str().as_bytes().to_vec()),
    }
    .serialize(out)
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<PathBuf, D::Error> {
    Ok(match Saved::deserialize(input)? {
        Saved::Text(text) => PathBuf::from(text.into_owned()),
        Saved::Bytes(bytes) => PathBuf::from(OsString::from_vec(bytes)),
    })
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Record {
        #[serde(with = "super")]
        path: PathBuf,
    }

    fn round_trip(path: PathBuf) -> String {
        let record = Record { path };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), record);
        json
    }

    #[test]
    fn a_utf8_path_is_text_and_any_other_its_bytes() {
        assert_eq!(
            round_trip("/data/é x.bin".into()),
            r#"{"path":"/data/é x.bin"}"#
        );
        let odd = PathBuf::from(OsStr::from_bytes(b"/d/\xff\xfe/ok.bin"));
        assert_eq!(
            round_trip(odd),
            r#"{"path":[47,100,47,255,254,47,111,107,46,98,105,110]}"#
        );
    }
}
