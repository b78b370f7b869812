//! Property tests of event checking: any byte string is accepted or rejected with a reason,
//! never a panic; what is accepted is a JSON object that still names its service.

use at_forwarder::config::source::CadfValidation;
use at_forwarder::event::{Origin, Validator};
use at_forwarder::tail::identity::FileKey;
use proptest::prelude::*;

const ORIGIN: Origin = Origin {
    key: FileKey { dev: 9, ino: 9 },
    offset: 42,
};

fn check_any(level: CadfValidation, bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut out = Vec::new();
    match Validator::new(level, true).check(bytes, ORIGIN, &mut out) {
        Ok(accepted) => {
            let v: serde_json::Value = serde_json::from_slice(&out)
                .map_err(|e| TestCaseError::fail(format!("accepted output is not JSON: {e}")))?;
            prop_assert_eq!(
                v["meta"]["serviceProviderName"].as_str().map(str::trim),
                Some(accepted.service.as_ref())
            );
        }
        Err(r) => prop_assert!(!r.problems.is_empty() && r.problems.iter().all(|p| !p.is_empty())),
    }
    Ok(())
}

/// Pieces of events, to reach deep into the checks rather than fail at the first byte.
fn event_like() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(r#"{"meta":{"serviceProviderName":"s","userAccountIds":["a"]},"payload":{"#.to_string()),
        Just(r#""action":"s.o.create","#.to_string()),
        Just(r#""outcome":"success","#.to_string()),
        Just(r#""initiator":{"id":"u","typeURI":"t"},"target":{"id":"crn:v1:bluemix:public:s:us:a/1:i::","typeURI":"s/o"},"#.to_string()),
        Just(r#""eventTime":"2017-10-19 19:07:50.32 +0000 UTC""#.to_string()),
        Just(r#""observer":{}"#.to_string()),
        Just(r#""id":null,"#.to_string()),
        Just("}}".to_string()),
        Just("}".to_string()),
        Just(",".to_string()),
        Just("[[[[".to_string()),
        Just("\\u00e9\"\\".to_string()),
        "[ -~]{0,8}",
    ];
    prop::collection::vec(piece, 0..14).prop_map(|parts| parts.concat().into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_are_accepted_or_rejected_with_a_reason(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        for level in [CadfValidation::Off, CadfValidation::Lenient, CadfValidation::Strict] {
            check_any(level, &bytes)?;
        }
    }

    #[test]
    fn event_shaped_bytes_are_accepted_or_rejected_with_a_reason(bytes in event_like()) {
        for level in [CadfValidation::Off, CadfValidation::Lenient, CadfValidation::Strict] {
            check_any(level, &bytes)?;
        }
    }
}
