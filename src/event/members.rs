//! Edits of a record's top-level members that fluentd's json parser makes: removing the
//! time field (`time_key`, default `time`, unless `keep_time_key`). Records reach here
//! already checked as one JSON object, so the walk only has to find member boundaries.

use memchr::memmem::Finder;

/// Removes the top-level member `key` of fluentd's json parser's time field.
pub struct TimeKeyRemover {
    /// `"key"` as it appears in JSON (a quick test before any walk).
    quoted: Vec<u8>,
    finder: Finder<'static>,
}

impl TimeKeyRemover {
    /// For the field `key`.
    pub fn new(key: &str) -> Self {
        let quoted = serde_json::Value::from(key).to_string().into_bytes();
        TimeKeyRemover {
            finder: Finder::new(&quoted).into_owned(),
            quoted,
        }
    }

    /// Removes the member from the object in `buf[from..]` (one whole JSON object);
    /// whether there was one. Only a top-level member counts, as in fluentd.
    pub fn remove(&self, buf: &mut Vec<u8>, from: usize) -> bool {
        let record = &buf[from..];
        if self.finder.find(record).is_none() {
            return false;
        }
        let Some((start, end)) = top_level_member(record, &self.quoted) else {
            return false;
        };
        buf.drain(from + start..from + end);
        true
    }
}

/// The byte range to cut for the member named `quoted` (with the quotes) at the top level
/// of the object in `b`: the member and one neighbouring comma.
fn top_level_member(b: &[u8], quoted: &[u8]) -> Option<(usize, usize)> {
    let mut i = b.iter().position(|c| *c == b'{')? + 1;
    let mut previous_comma: Option<usize> = None;
    loop {
        i = skip_ws(b, i);
        if b.get(i)? == &b'}' {
            return None;
        }
        let key_start = i;
        let key_end = skip_string(b, i)?;
        let value_start = skip_ws(b, skip_ws(b, key_end) + 1);
        let value_end = skip_value(b, value_start)?;
        let after = skip_ws(b, value_end);
        let is_it = &b[key_start..key_end] == quoted;
        match b.get(after)? {
            b',' if is_it => return Some((key_start, skip_ws(b, after + 1))),
            b'}' if is_it => return Some((previous_comma.unwrap_or(key_start), value_end)),
            b',' => {
                previous_comma = Some(after);
                i = after + 1;
            }
            _ => return None,
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// The index just past the string starting at `i` (a `"`).
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i)? != &b'"' {
        return None;
    }
    let mut j = i + 1;
    loop {
        match b.get(j)? {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
}

/// The index just past the value starting at `i`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b.get(j)? {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while b
                .get(j)
                .is_some_and(|c| !matches!(c, b',' | b'}' | b']') && !c.is_ascii_whitespace())
            {
                j += 1;
            }
            Some(j)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn removed(text: &str) -> String {
        let mut b = b"prefix".to_vec();
        b.extend_from_slice(text.as_bytes());
        TimeKeyRemover::new("time").remove(&mut b, 6);
        let b = b[6..].to_vec();
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn only_the_top_level_member_goes_and_the_rest_stays_json() {
        for (input, want) in [
            (r#"{"time":"x","a":1}"#, r#"{"a":1}"#),
            (r#"{"a":1,"time":"x"}"#, r#"{"a":1}"#),
            (
                r#"{"a":1, "time" : {"b":[1,"}"]} , "c":2}"#,
                r#"{"a":1, "c":2}"#,
            ),
            (r#"{"time":1}"#, r#"{}"#),
            (
                r#"{"a":{"time":1},"b":"\"time\""}"#,
                r#"{"a":{"time":1},"b":"\"time\""}"#,
            ),
            (r#"{"times":1}"#, r#"{"times":1}"#),
        ] {
            let got = removed(input);
            assert_eq!(got, want, "{input}");
            serde_json::from_str::<serde_json::Value>(&got).unwrap();
        }
    }
}
