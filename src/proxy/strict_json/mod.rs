//! One JSON check for every route, run on the verified body before it is parsed.
//!
//! serde reads JSON leniently in two ways that matter here:
//! - With a key twice, the last one wins. A component in front of this service that keeps the
//!   first would read a different `token` than this one does; an ambiguous body is refused.
//! - `RawValue` (publish `data`, connect `data`) skips over its content without converting
//!   numbers, so `1e999999` passed on publish while connect, which parses its `data`, refused
//!   it. Here every number is converted and one that overflows to infinity is refused.
//!
//! So the check walks the whole document once, converting every number and comparing the
//! keys of every object at any depth. Keys are borrowed from the input unless they contain
//! escapes (compared unescaped, so `"t\u006fken"` is `token`); one vector holds the keys of
//! the objects being walked, and an object with many keys moves to a hash set, so a body of
//! thousands of keys stays linear. Errors carry a category and a position, never input text.
//!
//! Most bodies never reach that walk: `scan` reads plain JSON (no escapes, no exponents) in
//! one pass over the bytes and passes it when the walk would; the rest, and every error, is
//! walked.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

mod scan;

/// Objects with more keys than this are checked with a hash set instead of a scan.
const SCAN_KEYS: usize = 16;

/// Why a body is not acceptable JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrictJsonKind {
    /// The same key twice in one object (compared after unescaping).
    DuplicateKey,
    /// A number too large for a 64-bit float.
    NumberOutOfRange,
    /// Nested deeper than serde_json's limit (128).
    TooDeep,
    /// Not JSON.
    Syntax,
    /// Ends in the middle of a value.
    Truncated,
}

impl StrictJsonKind {
    #[cfg(test)]
    pub const ALL: [Self; 5] = [
        Self::DuplicateKey,
        Self::NumberOutOfRange,
        Self::TooDeep,
        Self::Syntax,
        Self::Truncated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DuplicateKey => "duplicate key",
            Self::NumberOutOfRange => "number out of range",
            Self::TooDeep => "too deep",
            Self::Syntax => "syntax",
            Self::Truncated => "truncated",
        }
    }
}

impl fmt::Display for StrictJsonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected body: what and where (1-based line and column), and nothing of its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at line {line}, column {column}")]
pub struct StrictJsonError {
    pub kind: StrictJsonKind,
    pub line: usize,
    pub column: usize,
}

/// Accepts exactly one JSON value with no duplicate keys and only finite numbers.
pub fn check(json: &[u8]) -> Result<(), StrictJsonError> {
    if scan::clean(json) {
        return Ok(());
    }
    walk(json)
}

/// What the fast scan and the exact walk each make of `json`, for the fuzz target that holds
/// the scan to the walk.
pub(crate) fn scan_and_walk(json: &[u8]) -> (bool, Result<(), StrictJsonError>) {
    (scan::clean(json), walk(json))
}

/// The exact check: every document the fast scan is not sure about, and every error.
fn walk(json: &[u8]) -> Result<(), StrictJsonError> {
    let mut keys = Vec::new();
    let mut duplicate = false;
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let walked = Walk {
        keys: &mut keys,
        duplicate: &mut duplicate,
    }
    .deserialize(&mut deserializer)
    .and_then(|()| deserializer.end());
    walked.map_err(|e| StrictJsonError {
        kind: if duplicate {
            StrictJsonKind::DuplicateKey
        } else {
            kind_of(&e)
        },
        line: e.line(),
        column: e.column(),
    })
}

/// serde_json has no public error codes; its messages are fixed strings without input text,
/// and the tests pin the two that are told apart here.
fn kind_of(e: &serde_json::Error) -> StrictJsonKind {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => StrictJsonKind::Truncated,
        _ => {
            let message = e.to_string();
            if message.starts_with("number out of range") {
                StrictJsonKind::NumberOutOfRange
            } else if message.starts_with("recursion limit exceeded") {
                StrictJsonKind::TooDeep
            } else {
                StrictJsonKind::Syntax
            }
        }
    }
}

/// Walks one value. `keys` holds the keys of the objects enclosing the current position,
/// innermost last; each object truncates it back when done.
struct Walk<'a, 'de> {
    keys: &'a mut Vec<Cow<'de, str>>,
    duplicate: &'a mut bool,
}

impl<'de> Walk<'_, 'de> {
    fn nested(&mut self) -> Walk<'_, 'de> {
        Walk {
            keys: self.keys,
            duplicate: self.duplicate,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        // `deserialize_any` converts numbers (refusing infinity) where `IgnoredAny` would
        // only skip over their digits.
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self.nested())?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let start = self.keys.len();
        let mut many: Option<HashSet<Cow<'de, str>>> = None;
        while let Some(key) = map.next_key_seed(Key)? {
            let seen = match &mut many {
                Some(set) => !set.insert(key),
                None if self.keys[start..].contains(&key) => true,
                None if self.keys.len() - start >= SCAN_KEYS => {
                    let mut set: HashSet<_> = self.keys.drain(start..).collect();
                    set.insert(key);
                    many = Some(set);
                    false
                }
                None => {
                    self.keys.push(key);
                    false
                }
            };
            if seen {
                *self.duplicate = true;
                return Err(de::Error::custom("duplicate key"));
            }
            map.next_value_seed(self.nested())?;
        }
        self.keys.truncate(start);
        Ok(())
    }
}

/// An object key, borrowed from the input unless it had escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    fn kind(json: &str) -> Option<StrictJsonKind> {
        check(json.as_bytes()).err().map(|e| e.kind)
    }

    #[test]
    fn well_formed_proxy_bodies_pass() {
        for json in [
            r#"{"client":"c","transport":"websocket","data":{"token":"t"}}"#,
            r#"{"channel":"chat:1","data":{"n":[1,2.5,-3,1e300,1e-999999,18446744073709551616]}}"#,
            r#"{"a":{"k":1},"b":{"k":1},"c":[{"k":1},{"k":2}]}"#,
            r#"  {"t\u00f6ken":"x","token":"y"}  "#,
            "[]",
            "null",
        ] {
            assert_eq!(check(json.as_bytes()), Ok(()), "{json}");
        }
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        for json in [
            r#"{"data":{"token":"a"},"data":{"token":"b"}}"#,
            r#"{"data":{"token":"a","token":"b"}}"#,
            r#"{"data":{"x":[{"y":1,"y":2}]}}"#,
            // The same key once escaped: serde would read both as `token`.
            r#"{"data":{"token":"a","t\u006fken":"b"}}"#,
        ] {
            assert_eq!(kind(json), Some(StrictJsonKind::DuplicateKey), "{json}");
        }
    }

    #[test]
    fn a_duplicate_in_a_large_object_is_found_too() {
        let keys: Vec<String> = (0..200).map(|i| format!("\"k{i}\":{i}")).collect();
        let unique = format!("{{{}}}", keys.join(","));
        assert_eq!(check(unique.as_bytes()), Ok(()));
        let twice = format!("{{{},\"k7\":0}}", keys.join(","));
        assert_eq!(kind(&twice), Some(StrictJsonKind::DuplicateKey));
        // Keys of a closed inner object do not count against the outer one.
        let nested = format!("{{\"inner\":{unique},\"k7\":0}}");
        assert_eq!(check(nested.as_bytes()), Ok(()));
    }

    #[test]
    fn numbers_that_overflow_are_refused_even_where_rawvalue_would_pass_them() {
        // The gap this closes: a RawValue accepts the number unconverted.
        let raw: Result<Box<serde_json::value::RawValue>, _> = serde_json::from_str("1e999999");
        assert!(raw.is_ok());
        for json in [
            r#"{"data":1e999999}"#,
            r#"{"data":{"x":[-1E400]}}"#,
            r#"{"b64data":"","data":{"n":1.7976931348623159e308}}"#,
        ] {
            assert_eq!(kind(json), Some(StrictJsonKind::NumberOutOfRange), "{json}");
        }
    }

    #[test]
    fn other_failures_have_their_own_category() {
        assert_eq!(kind(r#"{"a":1"#), Some(StrictJsonKind::Truncated));
        assert_eq!(kind(r#"{"a":1}}"#), Some(StrictJsonKind::Syntax));
        assert_eq!(kind(r#"{"a":01}"#), Some(StrictJsonKind::Syntax));
        assert_eq!(kind("{\"a\":\"\\ud800\"}"), Some(StrictJsonKind::Syntax));
        assert_eq!(kind(&"[".repeat(200)), Some(StrictJsonKind::TooDeep));
        assert_eq!(
            check(&[b'"', 0xff, b'"']).map_err(|e| e.kind),
            Err(StrictJsonKind::Syntax)
        );
    }

    #[test]
    fn errors_say_where_but_never_what() {
        let secret = "ticket-that-must-not-leak";
        let json = format!("{{\n  \"token\": \"{secret}\",\n  \"token\": \"{secret}\"\n}}");
        let error = check(json.as_bytes()).expect_err("duplicate");
        assert_eq!(error.kind, StrictJsonKind::DuplicateKey);
        assert_eq!(error.line, 3);
        assert!(error.column > 0);
        assert!(!format!("{error} {error:?}").contains(secret));
    }

    #[test]
    fn kinds_have_distinct_labels() {
        let labels: HashSet<_> = StrictJsonKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(labels.len(), StrictJsonKind::ALL.len());
    }

    /// Any JSON value without duplicate keys: serde_json's own `Map` keeps keys unique.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[a-z\\\\\"\u{e9}\u{1F600}]{0,8}".prop_map(Value::String),
        ];
        nested(leaf)
    }

    /// Arrays and objects (up to 8 members, 4 deep) of `leaf` values; keys stay unique, as
    /// serde_json's own `Map` keeps them.
    pub(super) fn nested(
        leaf: impl Strategy<Value = Value> + 'static,
    ) -> impl Strategy<Value = Value> {
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn what_serde_json_writes_passes(value in json_value()) {
            let text = serde_json::to_vec(&value).expect("serialise");
            prop_assert_eq!(check(&text), Ok(()));
        }

        #[test]
        fn a_repeated_key_is_always_found(value in json_value(), key in "[a-z]{1,3}") {
            let mut object = serde_json::Map::new();
            object.insert("inner".into(), value);
            object.insert(key.clone(), Value::Null);
            let text = serde_json::to_string(&object).expect("serialise");
            // Append the key again at the end of the top-level object.
            let twice = format!("{},\"{key}\":1}}", &text[..text.len() - 1]);
            prop_assert_eq!(kind(&twice), Some(StrictJsonKind::DuplicateKey));
        }

        /// Never laxer than serde_json, and stricter only about duplicate keys.
        #[test]
        fn agrees_with_serde_json_except_on_duplicates(
            text in prop::collection::vec(
                prop::sample::select(&[
                    '{', '}', '[', ']', ':', ',', '"', ' ', 'a', 'e', 'E', '1', '9', '0', '-',
                    '.', '\\', 'u', 'n', 't',
                ][..]),
                0..24,
            ).prop_map(|chars| chars.into_iter().collect::<String>())
        ) {
            let ours = check(text.as_bytes());
            let serde = serde_json::from_str::<Value>(&text);
            match (ours, serde) {
                (Ok(()), serde) => prop_assert!(serde.is_ok(), "{}", text),
                (Err(e), Ok(_)) => prop_assert_eq!(e.kind, StrictJsonKind::DuplicateKey, "{}", text),
                (Err(_), Err(_)) => {}
            }
        }
    }
}
