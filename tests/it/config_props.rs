//! Property tests: the configuration loader never panics, whatever it is given; it either
//! loads or explains why not.

use proptest::prelude::*;

use crate::support::load;

/// Fragments that steer random input towards the parser's corners.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("<source>\n".to_string()),
        Just("</source>\n".to_string()),
        Just("<match a.** {b,c}.*>\n".to_string()),
        Just("</match>\n".to_string()),
        Just("<buffer tag, time>\n".to_string()),
        Just("</buffer>\n".to_string()),
        Just("<worker 0-1>\n".to_string()),
        Just("<label @X>\n".to_string()),
        Just("@type tail\n".to_string()),
        Just("@type ibmactivitytracker\n".to_string()),
        Just("@include *.conf\n".to_string()),
        Just("path [\"/a\",\n".to_string()),
        Just("tag \"#{ENV['X']}\\".to_string()),
        Just("key 'it\\'s'\n".to_string()),
        Just(" # comment\n".to_string()),
        Just("chunk_limit_size 1.5m\n".to_string()),
        Just("rotate_wait 1h30m\n".to_string()),
        Just("\"#{".to_string()),
        Just("é\t\r\n".to_string()),
        "[ -~]{0,12}",
        "\\PC{0,6}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC*") {
        let _ = load(&text).map(|l| l.describe()).map_err(|e| e.to_string());
    }

    #[test]
    fn config_shaped_text_never_panics(parts in prop::collection::vec(fragment(), 0..40)) {
        let text = parts.concat();
        match load(&text) {
            Ok(loaded) => { let _ = loaded.describe(); }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}
