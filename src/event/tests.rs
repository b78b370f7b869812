use super::*;
use crate::config::source::CadfValidation::{Cadf, Lenient, Off, Strict};

const NOISY: &str = r#"{"meta":{"serviceProviderName":"YOUR_SERVICE_NAME","serviceProviderRegion":"YOUR_SERVICE_SPACE_REGION","serviceProviderProjectId":"YOUR_SERVICE_SPACE_ID","userAccountIds":["USER_ACCOUNT_ID"],"userSpaceId":"USER_SPACE_ID","userSpaceRegion":"USER_SPACE_REGION"},"payload":{"initiator":{"id":"rbertram@us.ibm.com","typeURI":"security/account/user","credential":{"type":"user"}},"target":{"id":"crn:v1:bluemix:public:containers-kuberentes:dal09:a/4324327284:6e4c93cdf28e47f6abecb7e97e65056d::","typeURI":"containers-kubernetes/worker"},"action":"containers-kubernetes.worker.create","outcome":"success","reason":{"reasonCode":200},"severity":"normal","eventTime":"2017-10-19 19:07:50.32 +0000 UTC"}}"#;

const ORIGIN: Origin = Origin {
    key: FileKey { dev: 1, ino: 2 },
    offset: 300,
};

fn run(level: CadfValidation, line: &str) -> Result<(Accepted<'_>, String), Rejection> {
    let mut out = Vec::new();
    let accepted = Validator::new(level, true).check(line.as_bytes(), ORIGIN, &mut out)?;
    Ok((accepted, String::from_utf8(out).unwrap()))
}

#[test]
fn the_seed_noisy_event_passes_lenient_and_is_completed_in_place() {
    let (accepted, out) = run(Lenient, NOISY).unwrap();
    assert_eq!(
        accepted,
        Accepted {
            service: "YOUR_SERVICE_NAME".into(),
            changed: true,
            time_without_offset: false,
        }
    );
    let id = derived_id(ORIGIN, NOISY);
    let want = NOISY
        .replace(
            r#""action":"#,
            &format!(r#""observer":{{"name":"ActivityTracker"}},"typeURI":"{CADF_EVENT_URI}","eventType":"activity","id":"{id}","action":"#),
        )
        .replace("2017-10-19 19:07:50.32 +0000 UTC", "2017-10-19T19:07:50.320+0000");
    assert_eq!(out, want);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["payload"]["observer"]["name"], "ActivityTracker");
}

#[test]
fn the_seed_noisy_event_passes_activity_tracker_with_what_lenient_fills_in() {
    // id, eventType, typeURI and observer are filled in, never failures; CADF's
    // taxonomies name its type URIs otherwise.
    let (accepted, _) = run(Strict, NOISY).unwrap();
    assert!(accepted.changed);
    let r = run(Cadf, NOISY).unwrap_err();
    assert_eq!(r.reason, Reason::RuleBroken);
    assert!(
        r.problems
            .iter()
            .all(|p| p.contains("CADF resource taxonomy")),
        "{r:?}"
    );
}

#[test]
fn a_complete_event_is_forwarded_byte_for_byte() {
    let line = r#"{"meta":{"serviceProviderName":"svc","userAccountIds":["a1"]},"payload":{"id":"e1","eventType":"activity","typeURI":"http://schemas.dmtf.org/cloud/audit/1.0/event","observer":{"name":"ActivityTracker"},"action":"svc.thing.create","outcome":"success","initiator":{"id":"u","typeURI":"t"},"target":{"id":"t","typeURI":"svc/thing"},"severity":"normal","eventTime":"2020-01-01T00:00:00.000+0000",  "extra" : [1, 2.50, "é\u00e9"]}}"#;
    let (accepted, out) = run(Strict, line).unwrap();
    assert!(!accepted.changed);
    assert_eq!(out, line);
}

#[test]
fn off_checks_only_the_routing_field() {
    assert_eq!(
        run(Off, r#"{"meta":{"serviceProviderName":"s"}}"#)
            .unwrap()
            .1,
        r#"{"meta":{"serviceProviderName":"s"}}"#
    );
    assert_eq!(
        run(Off, r#"{"payload":{}}"#).unwrap_err().reason,
        Reason::MissingService
    );
}

#[test]
fn flat_form_is_completed_at_the_top_level() {
    let line = r#"{"meta":{"serviceProviderName":"s"},"logSourceCRN":"crn:v1:bluemix:public:s:us-south:a/1:i::","action":"s.o.create","outcome":"success","initiator":{"id":"u","typeURI":"t"},"target":{"id":"t","typeURI":"s/o"},"observer":{},"eventTime":"2020-01-01T00:00:00Z"}"#;
    let (_, out) = run(Lenient, line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["eventType"], "activity");
    assert_eq!(
        v["observer"],
        serde_json::json!({"name": "ActivityTracker"})
    );
    assert_eq!(v["eventTime"], "2020-01-01T00:00:00.000+0000");
    assert!(v["id"].as_str().unwrap().len() == 36);
}

#[test]
fn derived_ids_are_stable_and_distinct() {
    let a = derived_id(ORIGIN, NOISY);
    assert_eq!(a, derived_id(ORIGIN, NOISY));
    assert_ne!(
        a,
        derived_id(
            Origin {
                offset: 301,
                ..ORIGIN
            },
            NOISY
        )
    );
    assert_ne!(
        a,
        derived_id(
            Origin {
                key: FileKey { dev: 1, ino: 3 },
                ..ORIGIN
            },
            NOISY
        )
    );
    assert_eq!(a.len(), 36);
    assert_eq!(&a[14..15], "8");
}

#[test]
fn every_problem_is_reported_at_once() {
    let line = r#"{"meta":{"serviceProviderName":"s","userAccountIds":["a","b"]},"payload":{"outcome":"success","eventTime":"soon"}}"#;
    let r = run(Lenient, line).unwrap_err();
    assert_eq!(r.reason, Reason::NoUserCopy);
    assert_eq!(
        r.problems,
        [
            "meta.userAccountIds must hold exactly one account id, found 2",
            "missing payload.action",
            "missing payload.initiator",
            "missing payload.target",
            "payload.eventTime \"soon\" is not a time: expected the year as YYYY",
        ]
    );
}

#[test]
fn nesting_beyond_the_limit_is_refused_and_brackets_in_strings_do_not_count() {
    let nested = |depth: usize| {
        let inner = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        NOISY.replace(
            r#""severity":"normal""#,
            &format!(r#""severity":"normal","x":{inner}"#),
        )
    };
    // The payload and the envelope are two levels: MAX_DEPTH in all passes.
    assert!(run(Lenient, &nested(MAX_DEPTH - 2)).is_ok());
    let r = run(Lenient, &nested(MAX_DEPTH - 1)).unwrap_err();
    assert_eq!(r.reason, Reason::InvalidJson);
    assert!(
        r.problems[0].contains("nested deeper than 64 levels"),
        "{r}"
    );
    let brackets = "[{".repeat(MAX_DEPTH);
    let in_string = NOISY.replace("rbertram@us.ibm.com", &brackets);
    assert!(run(Lenient, &in_string).is_ok());
}

#[test]
fn strings_and_account_lists_read_without_serde_as_serde_reads_them() {
    let with_serde = |text: &str| -> AccountIds { serde_json::from_str(text).unwrap_or_default() };
    for text in [
        r#"["a-1"]"#,
        r#"["  "]"#,
        r#"[""]"#,
        r#"["a","b"]"#,
        r#"[ "a" ]"#,
        r#"["a\"b"]"#,
        r#"["\u0041"]"#,
        r#"[null]"#,
        r#"[]"#,
        r#""a""#,
    ] {
        let (fast, slow) = (AccountIds::read(text), with_serde(text));
        assert_eq!(
            (fast.entries, fast.good),
            (slow.entries, slow.good),
            "{text}"
        );
    }
    for text in [
        r#""2026-11-22 20:48:34.94 +0000 UTC""#,
        r#""a\"b""#,
        r#""\u00e9""#,
        "12",
        "null",
    ] {
        let raw = serde_json::from_str::<&serde_json::value::RawValue>(text).unwrap();
        let slow: Option<String> = serde_json::from_str(text).ok();
        let fast = envelope::text_of(Raw::new(raw.get()));
        assert_eq!(fast.as_deref(), slow.as_deref(), "{text}");
    }
}

#[test]
fn a_time_without_offset_is_read_as_utc_by_lenient_and_refused_by_strict() {
    let line = NOISY.replace("2017-10-19 19:07:50.32 +0000 UTC", "2022-07-12T10:55:00");
    let (accepted, out) = run(Lenient, &line).unwrap();
    assert!(accepted.time_without_offset);
    assert!(
        out.contains(r#""eventTime":"2022-07-12T10:55:00.000+0000""#),
        "{out}"
    );
    let r = run(Strict, &line).unwrap_err();
    assert!(
        r.problems.iter().any(|p| p.contains("no UTC offset")),
        "{r:?}"
    );
}
