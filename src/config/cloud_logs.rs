//! `<match @type ibm_cloud_logs>`: IBM Cloud Logs, Activity Tracker's successor. Events go
//! to the instance's ingress (`/logs/v1/singles`), authenticated with an IAM token made
//! from an API key or a trusted profile's compute-resource token, both read from files.

use std::path::PathBuf;

use super::diag::Diagnostic;
use super::section::Section;

/// Where the IAM token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IamCredential {
    /// An API key in a file (`api_key_path`).
    ApiKey(PathBuf),
    /// A trusted profile (`profile_id`) with the compute resource's token in a file
    /// (`cr_token_path`, the projected service-account token on Kubernetes).
    TrustedProfile {
        /// The trusted profile's id.
        profile_id: String,
        /// The compute-resource token file.
        cr_token_path: PathBuf,
    },
}

/// A resolved `<match @type ibm_cloud_logs>`.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudLogsOutput {
    /// `https://<instance_id>.ingress.<region>.logs.cloud.ibm.com/logs/v1/singles`, or
    /// `endpoint`'s scheme, host and port with that path.
    pub url: url::Url,
    /// The IAM token endpoint's base (`iam_endpoint`, default `https://iam.cloud.ibm.com`).
    pub iam_endpoint: url::Url,
    /// How the token is made.
    pub credential: IamCredential,
    /// `applicationName` of every entry (`application_name`; default: the service name).
    pub application_name: Option<String>,
    /// `subsystemName` of every entry (`subsystem_name`, default `activity-tracker`).
    pub subsystem_name: String,
    /// A record accessor whose value, when the event has one, is the entry's
    /// `subsystemName` instead (`subsystem_key`, e.g. `$.payload.target.typeURI`).
    pub subsystem_key: Option<String>,
    /// Request body limit: 2 MB, Cloud Logs' own.
    pub max_request_bytes: usize,
}

/// Builds `@type ibm_cloud_logs`; `None` after reporting what is wrong.
pub(super) fn build(s: &mut Section<'_>) -> Option<CloudLogsOutput> {
    let instance = s.string("instance_id");
    let region = s.string("region");
    let endpoint = s.typed("endpoint", |v| {
        url::Url::parse(v).map_err(|e| format!("not a URL: {e}"))
    });
    let url = match (&endpoint, &instance, &region) {
        (Some(e), _, _) => {
            let mut url = e.value.clone();
            url.set_path("/logs/v1/singles");
            url.set_query(None);
            Some(url)
        }
        (None, Some(i), Some(r)) => url::Url::parse(&format!(
            "https://{}.ingress.{}.logs.cloud.ibm.com/logs/v1/singles",
            i.value, r.value
        ))
        .map_err(|e| {
            s.error(Diagnostic::error(
                Some(i.span),
                format!("instance_id and region do not make a host: {e}"),
            ));
        })
        .ok(),
        _ => {
            s.error(Diagnostic::error(
                Some(s.element().span),
                "ibm_cloud_logs needs instance_id and region (or endpoint)",
            ));
            None
        }
    };
    let iam_endpoint = s
        .typed("iam_endpoint", |v| {
            url::Url::parse(v).map_err(|e| format!("not a URL: {e}"))
        })
        .map_or_else(
            || url::Url::parse("https://iam.cloud.ibm.com").expect("a valid URL"),
            |v| v.value,
        );
    for key in ["api_key", "apikey"] {
        if let Some(p) = s.param(key) {
            let span = p.key_span;
            s.error(
                Diagnostic::error(
                    Some(span),
                    format!("'{key}' would keep a credential in the configuration"),
                )
                .with_help("write the API key to a file (a mounted Secret) and set 'api_key_path'"),
            );
        }
    }
    let api_key = s.path("api_key_path").map(|v| v.value);
    let profile = s.string("profile_id").map(|v| v.value);
    let cr_token = s.path("cr_token_path").map(|v| v.value);
    let credential = match (api_key, profile, cr_token) {
        (Some(key), None, None) => Some(IamCredential::ApiKey(key)),
        (None, Some(profile_id), Some(cr_token_path)) => Some(IamCredential::TrustedProfile {
            profile_id,
            cr_token_path,
        }),
        _ => {
            s.error(Diagnostic::error(
                Some(s.element().span),
                "ibm_cloud_logs needs either api_key_path, or profile_id with cr_token_path",
            ));
            None
        }
    };
    Some(CloudLogsOutput {
        url: url?,
        iam_endpoint,
        credential: credential?,
        application_name: s.string("application_name").map(|v| v.value),
        subsystem_name: s
            .string("subsystem_name")
            .map_or_else(|| "activity-tracker".to_string(), |v| v.value),
        subsystem_key: s.string("subsystem_key").map(|v| v.value),
        max_request_bytes: 2_000_000,
    })
}
