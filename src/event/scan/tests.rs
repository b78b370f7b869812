use super::*;
use proptest::prelude::*;

/// What serde_json reads, as the checker's slow path does.
fn careful(text: &str) -> Option<Line<'_>> {
    if super::super::too_deep(text.as_bytes()).is_some() {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// The fast path reads `text` as serde does, or gives up; and it gives up on a line
/// serde reads only for the odd cases it is meant to (escapes, `meta` or `payload` as
/// an array, which serde reads positionally), so the property is not vacuous.
fn agrees(text: &str) -> Result<(), TestCaseError> {
    let careful = careful(text);
    match scan(text) {
        Some(fast) => prop_assert_eq!(Some(fast), careful, "{}", text),
        None if careful.is_some() => {
            let array = |v: serde_json::Value| v["meta"].is_array() || v["payload"].is_array();
            let odd = text.contains('\\') || serde_json::from_str(text).is_ok_and(array);
            prop_assert!(odd, "gave up on a plain line serde reads: {}", text);
        }
        None => {}
    }
    Ok(())
}

const NOISY: &str = r#"{"meta":{"serviceProviderName":"svc","serviceProviderRegion":"ng","userAccountIds":["a1"],"userSpaceId":"s","userSpaceRegion":"r"},"payload":{"initiator":{"id":"u@example.com","typeURI":"security/account/user","credential":{"type":"user"}},"target":{"id":"crn:v1:bluemix:public:svc:dal09:a/1::","typeURI":"svc/worker"},"action":"svc.worker.create","outcome":"success","reason":{"reasonCode":200},"severity":"normal","eventTime":"2017-10-19 19:07:50.32 +0000 UTC","requestData":{"path":"/v2/x?a=1\u0026b=2","n":[1,-2.5e3,0,true,false,null]}}}"#;

#[test]
fn ordinary_lines_take_the_fast_path_and_read_as_serde_reads_them() {
    let flat = r#" {"meta":{"serviceProviderName":"s\u00e9"},"logSourceCRN":"crn:x","id":"e1","eventTime":"2020-01-01T00:00:00Z","action":"s.t.read","outcome":"success","initiator":{},"target":{},"observer":null} "#;
    for line in [NOISY, flat, r#"{}"#, r#"{"meta":null,"payload":null}"#] {
        let fast = scan(line).unwrap_or_else(|| panic!("gave up on {line}"));
        assert_eq!(Some(fast), careful(line));
    }
    let line = scan(NOISY).unwrap();
    assert_eq!(line.meta.unwrap().service.as_deref(), Some("svc"));
    assert_eq!(
        line.payload.unwrap().action.unwrap().get(),
        r#""svc.worker.create""#
    );
}

#[test]
fn odd_lines_are_left_to_serde() {
    for line in [
        r#"{"meta":{},"meta":{}}"#,
        r#"{"payload":{"id":1,"id":2}}"#,
        r#"{"met\u0061":{}}"#,
        r#"{"x":"\ud800"}"#,
        r#"{"meta":[]}"#,
        r#"{"meta":{"serviceProviderName":5}}"#,
        r#"{"x":01}"#,
        r#"{"x":1.}"#,
        r#"{"x":"a	b"}"#,
        r#"{"x":1} x"#,
        r#"{"x":[1,]}"#,
    ] {
        assert!(scan(line).is_none(), "{line}");
    }
    let deep = format!("{{\"x\":{}1{}}}", "[".repeat(63), "]".repeat(63));
    assert!(scan(&deep).is_some());
    let deeper = format!("{{\"x\":{}1{}}}", "[".repeat(64), "]".repeat(64));
    assert!(scan(&deeper).is_none());
}

/// Snippets that make or break JSON, for mutating lines.
const SNIPPETS: &[&str] = &[
    "\"",
    "\\",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    " ",
    "\t",
    "null",
    "true",
    "0",
    "01",
    "-",
    "1e",
    ".5",
    "\"meta\":{},",
    "\"payload\":{\"id\":1},",
    "\"id\":\"x\",",
    "\\u0041",
    "\\ud83d",
    "\\x",
    "\u{1}",
    "é",
    "\"serviceProviderName\":null,",
    "\"eventTime\":",
    "\"observer\":{},",
];

fn leaf() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "[a-z\"\\\\/\u{1}-\u{1f}é😀 ]{0,12}".prop_map(serde_json::Value::from),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec![
            "meta",
            "payload",
            "logSourceCRN",
            "id",
            "eventType",
            "typeURI",
            "eventTime",
            "action",
            "outcome",
            "initiator",
            "target",
            "observer",
            "reason",
            "severity",
            "measurements",
            "serviceProviderName",
            "userAccountIds",
            "userSpaceId",
            "userSpaceRegion",
        ])
        .prop_map(String::from),
        "[a-z\"]{0,4}",
    ]
}

fn value() -> impl Strategy<Value = serde_json::Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn the_fast_path_reads_generated_json_as_serde_does(
        members in prop::collection::vec((key(), value()), 0..8),
        pretty in any::<bool>(),
    ) {
        let v = serde_json::Value::Object(members.into_iter().collect());
        let text = if pretty {
            serde_json::to_string_pretty(&v).unwrap()
        } else {
            serde_json::to_string(&v).unwrap()
        };
        agrees(&text)?;
    }

    #[test]
    fn the_fast_path_never_accepts_what_serde_refuses(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0..4usize, prop::sample::select(SNIPPETS)), 1..4),
    ) {
        let mut bytes = NOISY.as_bytes().to_vec();
        for (at, cut, snippet) in edits {
            let at = at.index(bytes.len() + 1);
            let end = (at + cut).min(bytes.len());
            bytes.splice(at..end, snippet.bytes());
        }
        if let Ok(text) = std::str::from_utf8(&bytes) {
            agrees(text)?;
        }
    }
}

/// What the receiver's serde path reads from a request body: `payload.id` else `id`, and
/// `payload.eventTime`, each a string or absent.
fn careful_ids(body: &str) -> Option<Vec<(Option<String>, Option<String>)>> {
    #[derive(serde::Deserialize)]
    struct Event {
        #[serde(default)]
        payload: Option<Inner>,
        #[serde(default)]
        id: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        #[serde(default)]
        id: Option<String>,
        #[serde(default, rename = "eventTime")]
        event_time: Option<String>,
    }
    let events: Vec<Event> = serde_json::from_str(body).ok()?;
    let read = |e: Event| match e.payload {
        Some(p) => (p.id.or(e.id), p.event_time),
        None => (e.id, None),
    };
    Some(events.into_iter().map(read).collect())
}

#[test]
fn a_request_body_gives_each_events_id_and_time() {
    let body = format!(
        "[{NOISY},\n {{\"id\":\"flat\",\"eventTime\":\"t\"}}, {{\"payload\":{{\"id\":\"a\\\"b\",\"eventTime\":\"2020\"}}}},{{\"payload\":null,\"id\":null}}]"
    );
    let fast = super::super::ids_and_times(&body).expect("the scanner reads it");
    let fast: Vec<_> = fast
        .into_iter()
        .map(|(i, t)| (i.map(String::from), t.map(String::from)))
        .collect();
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        fast,
        vec![
            (None, some("2017-10-19 19:07:50.32 +0000 UTC")),
            (some("flat"), None),
            (some("a\"b"), some("2020")),
            (None, None),
        ]
    );
    assert_eq!(Some(fast), careful_ids(&body));
    for odd in ["[", "[{}", "[{},]", "{}", "[{\"id\":5}]", "[{}] x"] {
        assert!(super::super::ids_and_times(odd).is_none(), "{odd}");
    }
}

proptest! {
    #[test]
    fn a_request_body_reads_as_the_receivers_serde_path_reads_it(
        events in prop::collection::vec(prop::collection::vec((key(), value()), 0..6), 0..4),
        pretty in any::<bool>(),
    ) {
        let v = serde_json::Value::Array(
            events.into_iter().map(|m| serde_json::Value::Object(m.into_iter().collect())).collect(),
        );
        let body = if pretty {
            serde_json::to_string_pretty(&v).unwrap()
        } else {
            serde_json::to_string(&v).unwrap()
        };
        if let Some(fast) = super::super::ids_and_times(&body) {
            let fast: Vec<_> = fast
                .into_iter()
                .map(|(i, t)| (i.map(String::from), t.map(String::from)))
                .collect();
            prop_assert_eq!(Some(fast), careful_ids(&body), "{}", body);
        }
    }
}

proptest! {
    #[test]
    fn the_end_of_a_string_is_found_where_a_byte_search_finds_it(
        bytes in prop::collection::vec(prop::sample::select(vec![b'a', b'"', b'\\', 0x80, 0xa2, 0xdc, 0x21, 0x23]), 0..150),
    ) {
        let expected = bytes.iter().position(|&b| b == b'"' || b == b'\\');
        prop_assert_eq!(quote_or_backslash(&bytes), expected);
    }
}
