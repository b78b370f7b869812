//! The rule levels above lenient: `cadf` — CADF (DMTF DSP0262) as seed 004 states it, its
//! taxonomies applied as pycadf applies them (a value starting with a taxonomy entry) —
//! and `activity_tracker` — CADF's structure with Activity Tracker's naming in place of
//! the taxonomies (`service.object.verb` actions, `<service>/<object>` type URIs) and its
//! conventions (severity, a numeric reasonCode, CRN shapes).
//!
//! Both see the event as lenient completes it: a missing `id`, `eventType` (activity),
//! `typeURI` or `observer` is filled in, never a failure.

use serde_json::Value;

use super::envelope::{present, string, Fields, Raw};
use super::CADF_EVENT_URI;

const EVENT_TYPES: [&str; 3] = ["activity", "monitor", "control"];
const OUTCOMES: [&str; 4] = ["success", "failure", "pending", "unknown"];
const SEVERITIES: [&str; 3] = ["normal", "warning", "critical"];
/// Verbs Activity Tracker names invalid.
const BAD_VERBS: [&str; 2] = ["info", "unknown"];
/// CADF's action taxonomy (DSP0262 annex; pycadf's list, with `authenticate/logon`).
const ACTIONS: [&str; 27] = [
    "backup",
    "capture",
    "create",
    "configure",
    "read",
    "update",
    "delete",
    "monitor",
    "start",
    "stop",
    "deploy",
    "undeploy",
    "enable",
    "disable",
    "send",
    "receive",
    "authenticate",
    "revoke",
    "renew",
    "restore",
    "evaluate",
    "allow",
    "deny",
    "notify",
    "unknown",
    "read/list",
    "authenticate/logon",
];
/// The roots of CADF's resource taxonomy (pycadf's, whose deeper entries all start with
/// one of these).
const RESOURCE_ROOTS: [&str; 5] = ["storage", "compute", "network", "service", "data"];

/// Which rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rules {
    Cadf,
    ActivityTracker,
}

/// Appends a message for each rule of `rules` that `f` breaks; `at` prefixes field
/// names (`payload.` for the legacy envelope, empty for the flat form).
pub(super) fn check(
    rules: Rules,
    f: &Fields<'_>,
    at: &str,
    log_source_crn: Option<Raw<'_>>,
    problems: &mut Vec<String>,
) {
    structure(f, at, problems);
    match rules {
        Rules::Cadf => cadf_names(f, at, problems),
        Rules::ActivityTracker => activity_tracker(f, at, log_source_crn, problems),
    }
}

/// What both levels check: the enumerations, what each event type requires, the
/// resources' shape, the event's type URI.
fn structure(f: &Fields<'_>, at: &str, problems: &mut Vec<String>) {
    if let Some(uri) = string(f.type_uri).filter(|u| u != CADF_EVENT_URI) {
        problems.push(format!(
            "{at}typeURI '{uri}' is not the CADF event URI {CADF_EVENT_URI}"
        ));
    }
    let event_type = string(f.event_type).unwrap_or_else(|| "activity".into());
    if !EVENT_TYPES.contains(&event_type.as_ref()) {
        problems.push(format!(
            "{at}eventType '{event_type}' is not one of {}",
            EVENT_TYPES.join(", ")
        ));
    }
    if let Some(o) = string(f.outcome).filter(|o| !OUTCOMES.contains(&o.as_ref())) {
        problems.push(format!(
            "{at}outcome '{o}' is not one of {}",
            OUTCOMES.join(", ")
        ));
    }
    if event_type == "control" && !present(f.reason) {
        problems.push(format!("{at}reason is required for a control event"));
    }
    if event_type == "monitor"
        && !non_empty_array(f.measurements)
        && !non_empty_array(f.measurement)
    {
        problems.push(format!("{at}measurements are required for a monitor event"));
    }
    for (name, raw) in [("initiator", f.initiator), ("target", f.target)] {
        if let Some(problem) = raw.and_then(|r| resource_problem(r, false)) {
            problems.push(format!("{at}{name} {problem}"));
        }
    }
    if let Some(problem) = f.observer.and_then(|r| resource_problem(r, true)) {
        problems.push(format!("{at}observer {problem}"));
    }
    if let Some(reason) = object(f.reason) {
        match reason.get("reasonCode") {
            None | Some(Value::String(_)) => {}
            Some(Value::Number(n)) if n.is_u64() => {}
            Some(other) => problems.push(format!(
                "{at}reason.reasonCode must be a string or a number, found {other}"
            )),
        }
    }
}

/// CADF's taxonomies: the action (or the verb of a qualified `service.object.verb`) and
/// the initiator's and target's type URIs.
fn cadf_names(f: &Fields<'_>, at: &str, problems: &mut Vec<String>) {
    if let Some(action) = string(f.action) {
        let verb = action.rsplit('.').next().unwrap_or(&action);
        if !ACTIONS.iter().any(|a| verb.starts_with(a)) {
            problems.push(format!(
                "{at}action '{action}' is not in the CADF action taxonomy (create, read, update, delete, monitor, authenticate/logon, …)"
            ));
        }
    }
    for (name, raw) in [("initiator", f.initiator), ("target", f.target)] {
        let uri =
            object(raw).and_then(|r| r.get("typeURI").and_then(Value::as_str).map(String::from));
        if let Some(uri) =
            uri.filter(|u| !RESOURCE_ROOTS.iter().any(|r| u.starts_with(r)) && u != "unknown")
        {
            problems.push(format!(
                "{at}{name}.typeURI '{uri}' is not a CADF resource taxonomy path (such as service/compute/node, data/security/account/user)"
            ));
        }
    }
}

/// Activity Tracker's conventions (seeds 000 and 001).
fn activity_tracker(
    f: &Fields<'_>,
    at: &str,
    log_source_crn: Option<Raw<'_>>,
    problems: &mut Vec<String>,
) {
    if !present(f.severity) {
        problems.push(format!("missing {at}severity"));
    }
    if let Some(action) = string(f.action) {
        if let Some(problem) = action_problem(&action) {
            problems.push(format!("{at}action '{action}' {problem}"));
        }
    }
    if let Some(s) = string(f.severity).filter(|s| !SEVERITIES.contains(&s.as_ref())) {
        problems.push(format!(
            "{at}severity '{s}' is not one of {}",
            SEVERITIES.join(", ")
        ));
    }
    if let Some(reason) = object(f.reason) {
        match reason.get("reasonCode") {
            Some(Value::Number(n)) if n.is_u64() => {}
            Some(other) => problems.push(format!(
                "{at}reason.reasonCode must be a number (the HTTP status) for Activity Tracker, found {other}"
            )),
            None => problems.push(format!("missing {at}reason.reasonCode")),
        }
    }
    if let Some(crn) = string(log_source_crn) {
        if let Some(problem) = crn_problem(&crn, true) {
            problems.push(format!("logSourceCRN '{crn}' {problem}"));
        }
    }
    let target_id =
        object(f.target).and_then(|t| t.get("id").and_then(Value::as_str).map(String::from));
    if let Some(id) = target_id.filter(|id| id.starts_with("crn:")) {
        if let Some(problem) = crn_problem(&id, false) {
            problems.push(format!("{at}target.id '{id}' {problem}"));
        }
    }
}

fn object(raw: Option<Raw<'_>>) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_str::<Value>(raw?.get()).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn non_empty_array(raw: Option<Raw<'_>>) -> bool {
    raw.and_then(|r| serde_json::from_str::<Vec<Value>>(r.get()).ok())
        .is_some_and(|v| !v.is_empty())
}

/// A CADF resource has an `id` and a `typeURI`; an observer may instead be the shortform
/// (`{"id":"target"}`) or, as Activity Tracker writes it, `{"name":"ActivityTracker"}`.
fn resource_problem(raw: Raw<'_>, observer: bool) -> Option<String> {
    let Ok(Value::Object(r)) = serde_json::from_str::<Value>(raw.get()) else {
        return Some("must be an object with id and typeURI".into());
    };
    let text = |k: &str| r.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    if observer
        && (matches!(text("id"), Some("target" | "initiator"))
            || text("name") == Some("ActivityTracker"))
    {
        return None;
    }
    match (text("id"), text("typeURI")) {
        (Some(_), Some(_)) => None,
        (None, _) => Some("has no id".into()),
        (_, None) => Some("has no typeURI".into()),
    }
}

/// `service.object.verb`: at least three dot-separated parts of lower-case letters,
/// digits and `-`, and not one of the verbs Activity Tracker refuses.
fn action_problem(action: &str) -> Option<&'static str> {
    let parts: Vec<&str> = action.split('.').collect();
    let well_formed = parts.iter().all(|p| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    });
    if parts.len() < 3 || !well_formed {
        return Some("is not of the form service.object.verb (lower case, '-' between words)");
    }
    BAD_VERBS
        .contains(parts.last().expect("three parts"))
        .then_some("ends in a verb Activity Tracker refuses (info, unknown)")
}

/// `crn:v1:cname:ctype:service-name:location:scope:service-instance:resource-type:resource`.
fn crn_problem(crn: &str, account_scope: bool) -> Option<String> {
    let seg: Vec<&str> = crn.split(':').collect();
    if seg.len() != 10 {
        return Some(format!("has {} segments; a CRN has 10", seg.len()));
    }
    let lower = |s: &str, extra: &[char]| {
        s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || extra.contains(&c))
    };
    let problem = if seg[0] != "crn" || seg[1] != "v1" {
        "must start with crn:v1:"
    } else if seg[2].is_empty() || !lower(seg[2], &[]) {
        "has an invalid cname"
    } else if !["public", "dedicated", "local"].contains(&seg[3]) {
        "has a ctype other than public, dedicated or local"
    } else if seg[4].is_empty() || !lower(seg[4], &['.']) {
        "has an invalid service name"
    } else if seg[5].is_empty() {
        "has no location"
    } else if !(seg[6].is_empty()
        || ["a/", "o/", "s/"]
            .iter()
            .any(|p| seg[6].starts_with(p) && seg[6].len() > 2))
    {
        "has a scope other than a/…, o/… or s/…"
    } else if account_scope && !seg[6].starts_with("a/") {
        "must have an account scope (a/…)"
    } else {
        return None;
    };
    Some(problem.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crn_shapes() {
        assert_eq!(crn_problem("crn:v1:bluemix:public:containers-kuberentes:dal09:a/4324327284:6e4c93cdf28e47f6abecb7e97e65056d::", true), None);
        assert_eq!(
            crn_problem("crn:v1:staging:public:logdnaat:us-south:a/abc:inst::", true),
            None
        );
        assert!(
            crn_problem("crn:v1:bluemix:public:svc:dal09:s/space:inst::", true)
                .unwrap()
                .contains("account scope")
        );
        assert_eq!(
            crn_problem("crn:v1:bluemix:public:svc:dal09:s/space:inst::", false),
            None
        );
        assert!(crn_problem("crn:v1:bluemix:public:svc", false)
            .unwrap()
            .contains("10"));
        assert!(crn_problem("crn:v2:bluemix:public:svc:dal09:::x:", false).is_some());
        assert!(crn_problem("crn:v1:bluemix:private:svc:dal09:::x:", false)
            .unwrap()
            .contains("ctype"));
    }

    #[test]
    fn actions() {
        assert_eq!(action_problem("containers-kubernetes.worker.create"), None);
        assert_eq!(
            action_problem("is.load-balancer.load-balancer.listener.create"),
            None
        );
        assert!(action_problem("create").is_some());
        assert!(action_problem("svc.Object.create").is_some());
        assert!(action_problem("svc.object.info")
            .unwrap()
            .contains("refuses"));
        assert!(action_problem("svc..create").is_some());
    }
}
