//! The fast path of the strict check: one pass over the bytes that recognises the plain JSON
//! Centrifugo sends (no escapes, no exponents, few keys per object, shallow nesting) and says
//! "clean" only when the exact walk would accept the document too.
//!
//! Anything it is not sure about (an escape, an exponent, a very long integer, an object with
//! many keys, deep nesting, a syntax error) is left to the exact walk, which also finds the
//! error's kind and position. So this pass decides nothing on its own: it only spares a
//! well-formed body the walk through serde's visitor machinery, which costs several times
//! more than reading the bytes once. The fuzz target `strict_json` and a property test hold
//! it to that: whenever it says clean, the walk agrees.

/// Deeper documents go to the walk (serde_json's own limit is 128).
const MAX_DEPTH: usize = 64;
/// Keys held at once for the duplicate check, over all open objects; more go to the walk.
const MAX_KEYS: usize = 48;
/// Integer digits that always convert to a finite `f64` (its range ends near 1.8e308).
const MAX_INT_DIGITS: usize = 300;

/// True only when `json` is one JSON value that the exact check accepts.
pub(super) fn clean(json: &[u8]) -> bool {
    let mut scan = Scan {
        json,
        pos: 0,
        keys: [&[]; MAX_KEYS],
        held: 0,
    };
    scan.whitespace();
    scan.value(0).is_some() && {
        scan.whitespace();
        scan.pos == json.len()
    }
}

/// How many bytes at the start of `bytes` are ASCII from the space up, other than the quote
/// and the backslash: the body of a plain string. Eight bytes at a time, as tokens and ids
/// are long runs of them.
fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // A byte's high bit ends up set when it is zero (after the XOR), below 0x20, or not
    // ASCII; a borrow may also mark bytes after such a byte, never before it.
    let zero = |x: u64| x.wrapping_sub(ONES) & !x;
    let mut run = 0;
    while let Some(chunk) = bytes.get(run..run + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let special = zero(x ^ (ONES * u64::from(b'"')))
            | zero(x ^ (ONES * u64::from(b'\\')))
            | x.wrapping_sub(ONES * 0x20)
            | x;
        if special & HIGH != 0 {
            // The lowest marked byte is a real one: borrows only run towards higher bytes.
            return run + (special & HIGH).trailing_zeros() as usize / 8;
        }
        run += 8;
    }
    run + bytes[run..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b))
        .unwrap_or(bytes.len() - run)
}

/// `None` anywhere means "not sure": the caller falls back to the exact walk.
struct Scan<'a> {
    json: &'a [u8],
    pos: usize,
    /// Keys of the open objects, innermost last; `keys[..held]` are in use.
    keys: [&'a [u8]; MAX_KEYS],
    held: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.json.get(self.pos).copied()
    }

    fn whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'{' if depth < MAX_DEPTH => self.object(depth + 1),
            b'[' if depth < MAX_DEPTH => self.array(depth + 1),
            b'"' => self.string().map(drop),
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => None,
        }
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        if self.open(b'}') {
            return Some(());
        }
        let start = self.held;
        loop {
            if self.peek()? != b'"' {
                return None;
            }
            let key = self.string()?;
            if self.keys[start..self.held].contains(&key) || self.held == MAX_KEYS {
                return None;
            }
            self.keys[self.held] = key;
            self.held += 1;
            self.whitespace();
            if self.peek()? != b':' {
                return None;
            }
            self.pos += 1;
            self.whitespace();
            self.value(depth)?;
            if self.closed(b'}')? {
                self.held = start;
                return Some(());
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if self.open(b']') {
            return Some(());
        }
        loop {
            self.value(depth)?;
            if self.closed(b']')? {
                return Some(());
            }
        }
    }

    /// Steps over the opening bracket; true when `close` follows at once (an empty one).
    fn open(&mut self, close: u8) -> bool {
        self.pos += 1;
        self.whitespace();
        let empty = self.peek() == Some(close);
        if empty {
            self.pos += 1;
        }
        empty
    }

    /// After a member: true at `close`, false after a comma (more follows), `None` otherwise.
    fn closed(&mut self, close: u8) -> Option<bool> {
        self.whitespace();
        let next = self.peek()?;
        self.pos += 1;
        if next == close {
            Some(true)
        } else if next == b',' {
            self.whitespace();
            Some(false)
        } else {
            None
        }
    }

    /// A string without escapes or control characters, in valid UTF-8: its bytes between
    /// the quotes, which compare as keys exactly as their unescaped text would.
    fn string(&mut self) -> Option<&'a [u8]> {
        let start = self.pos + 1;
        let mut end = start;
        let mut ascii = true;
        loop {
            end += plain_run(&self.json[end..]);
            match *self.json.get(end)? {
                b'"' => break,
                b'\\' | 0x00..=0x1f => return None,
                _ => {
                    ascii = false;
                    end += 1;
                }
            }
        }
        let text = &self.json[start..end];
        if !ascii && std::str::from_utf8(text).is_err() {
            return None;
        }
        self.pos = end + 1;
        Some(text)
    }

    /// JSON's number grammar without an exponent, so its value is always finite.
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                if self.digits() > MAX_INT_DIGITS {
                    return None;
                }
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        match self.peek() {
            Some(b'e' | b'E') => None,
            _ => Some(()),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.json[self.pos..].starts_with(word) {
            self.pos += word.len();
            Some(())
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    #[test]
    fn centrifugo_bodies_take_the_fast_path() {
        for json in [
            r#"{"client":"9336a229-2400-4ebc-8c50-0a643d22e8a0","transport":"websocket","protocol":"json","encoding":"json","data":{"token":"bench-1-2"}}"#,
            r#"{"client":"c","transport":"websocket","protocol":"json","encoding":"json","user":"56","channel":"chat:index","meta":{"sub":"56","tier":"full","exp":1767225600},"data":{"text":"hello","n":[1,-2.5,0,0.125],"ok":true,"none":null}}"#,
            r#"{"client":"c","transport":"sse","protocol":"json","encoding":"json","user":"56","method":"getCurrentYear","data":{}}"#,
            "{\n  \"client\": \"c\",\r\n\t\"b64data\": \"eyJ0b2tlbiI6InQifQ==\"\n}",
            r#"{"data":{"text":"naïve café ☕"}}"#,
            "[]",
            "-0.5",
        ] {
            assert!(clean(json.as_bytes()), "{json}");
            assert_eq!(super::super::walk(json.as_bytes()), Ok(()), "{json}");
        }
    }

    #[test]
    fn what_it_is_unsure_of_is_left_to_the_walk() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let keys: Vec<String> = (0..=MAX_KEYS).map(|i| format!("\"k{i}\":{i}")).collect();
        let many_keys = format!("{{{}}}", keys.join(","));
        let long_int = "9".repeat(MAX_INT_DIGITS + 1);
        for json in [
            // Accepted by the walk, but not plain enough for the scan.
            r#"{"data":{"token":"a\"b"}}"#,
            r#"{"t\u006fken":"x"}"#,
            r#"{"n":1e3}"#,
            r#"{"n":1E-3}"#,
            long_int.as_str(),
            deep.as_str(),
            many_keys.as_str(),
            // Refused by the walk.
            r#"{"token":"a","token":"b"}"#,
            r#"{"data":{"x":[{"y":1,"y":2}]}}"#,
            r#"{"a":1,}"#,
            r#"[1,]"#,
            r#"{,}"#,
            r#"{"a" 1}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":-}"#,
            r#"{"a":+1}"#,
            r#"{"a":tru}"#,
            r#"{"a":truex}"#,
            r#"{"a":1}}"#,
            r#"{"a":1"#,
            "{\"a\":\"\u{1}\"}",
            "\"\t\"",
            "",
            "  ",
            "{'a':1}",
            "\u{feff}{}",
        ] {
            assert!(!clean(json.as_bytes()), "{json}");
        }
        assert!(!clean(&[b'"', 0xff, b'"']));
        assert!(!clean(&[b'"', 0xe2, 0x98, b'"']));
    }

    #[test]
    fn keys_of_a_closed_object_do_not_count_against_its_parent() {
        // Each inner object fills the keys the outer one (three keys) leaves, and closes
        // before the next begins.
        let inner: Vec<String> = (0..MAX_KEYS - 3).map(|i| format!("\"k{i}\":{i}")).collect();
        let inner = format!("{{{}}}", inner.join(","));
        let json = format!("{{\"a\":{inner},\"b\":{inner},\"k0\":[{inner},{inner}]}}");
        assert!(clean(json.as_bytes()));
    }

    #[test]
    fn a_plain_run_stops_at_the_first_special_byte_wherever_it_is() {
        let text: Vec<u8> = (0x20..0x7f).filter(|&b| b != b'"' && b != b'\\').collect();
        assert_eq!(plain_run(&text), text.len());
        for special in [b'"', b'\\', 0x00, 0x1f, 0x80, 0xff] {
            for at in 0..text.len() {
                let mut bytes = text.clone();
                bytes[at] = special;
                assert_eq!(plain_run(&bytes), at, "{special:#x} at {at}");
            }
        }
        assert_eq!(plain_run(b""), 0);
    }

    /// Plain JSON as Centrifugo and its clients write it: what the scan must take itself.
    fn plain_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1_000_000i32..1_000_000, 1u32..10_000)
                .prop_map(|(n, d)| Value::from(f64::from(n) / f64::from(d))),
            "[a-z0-9 :._\u{e9}\u{1F600}-]{0,12}".prop_map(Value::String),
        ];
        super::super::tests::nested(leaf)
    }

    proptest! {
        #[test]
        fn plain_json_is_clean(value in plain_value(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_vec_pretty(&value)
            } else {
                serde_json::to_vec(&value)
            }
            .expect("serialise");
            // serde_json writes large and tiny floats with an exponent: those are the walk's.
            let exponent = text.iter().any(|&b| b == b'e' || b == b'E')
                && value_has_exponent(&value);
            prop_assert_eq!(clean(&text), !exponent);
            prop_assert_eq!(super::super::walk(&text), Ok(()));
        }

        /// The one rule that matters: clean means the walk accepts it too.
        #[test]
        fn clean_implies_the_walk_accepts(
            text in prop::collection::vec(
                prop::sample::select(&[
                    '{', '}', '[', ']', ':', ',', '"', ' ', '\n', 'a', 'e', 'E', '1', '9', '0',
                    '-', '+', '.', '\\', 'u', 'n', 't', 'r', 'l', 'f', 's', '\u{0}', '\u{e9}',
                ][..]),
                0..32,
            ).prop_map(|chars| chars.into_iter().collect::<String>())
        ) {
            if clean(text.as_bytes()) {
                prop_assert_eq!(super::super::walk(text.as_bytes()), Ok(()), "{}", text);
                prop_assert!(serde_json::from_str::<Value>(&text).is_ok(), "{}", text);
            }
        }

        #[test]
        fn clean_implies_the_walk_accepts_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..24)) {
            if clean(&bytes) {
                prop_assert_eq!(super::super::walk(&bytes), Ok(()));
            }
        }
    }

    fn value_has_exponent(value: &Value) -> bool {
        match value {
            Value::Number(n) => n.to_string().contains(['e', 'E']),
            Value::Array(items) => items.iter().any(value_has_exponent),
            Value::Object(map) => map.values().any(value_has_exponent),
            _ => false,
        }
    }
}
