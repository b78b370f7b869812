//! The receiver's event store, in sled.
//!
//! Trees: `events` — key `<tenant>\0<YYYY-MM-DD>\0<sequence, u64 BE>`, value the event as
//! received; `ids` — key `<tenant>\0<event id>`, value the day, so an event id is stored once
//! per tenant; `idempotency` — key `<service>\0<Idempotency-Key>`, value the JSON answer given
//! the first time; `writers` — key `<tenant>\0<service>`: which services wrote to a tenant
//! (they may read it). Tenants are `project:<id>`, `account:<id>` and `space:<id>`.

use std::io::Write;
use std::path::Path;

use serde_json::Value;

use crate::event::time;

/// What an ingestion did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ingested {
    /// Events in the request.
    pub received: usize,
    /// Copies newly stored.
    pub new: usize,
    /// Copies already stored (same id for the same tenant).
    pub duplicates: usize,
    /// The Idempotency-Key was seen before: nothing was stored again.
    pub replay: bool,
}

/// The tenants an event is copied to, and its id and day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copies {
    /// `project:…`, `account:…`, `space:…`.
    pub tenants: Vec<String>,
    /// The event's id.
    pub id: String,
    /// `YYYY-MM-DD` of its eventTime (UTC), or of now when it has none.
    pub day: String,
}

/// Where an event goes: the service copy under the project (unless `saveServiceCopy` is
/// false) and the user copy under the account or space (seed 001).
pub fn copies(event: &Value, project: &str, today: &str) -> Copies {
    let meta = &event["meta"];
    let cadf = if event["payload"].is_object() {
        &event["payload"]
    } else {
        event
    };
    let mut tenants = Vec::new();
    if event["saveServiceCopy"].as_bool() != Some(false) {
        tenants.push(format!("project:{project}"));
    }
    if let Some(account) = meta["userAccountIds"].get(0).and_then(Value::as_str) {
        tenants.push(format!("account:{account}"));
    } else if let Some(space) = meta["userSpaceId"].as_str() {
        tenants.push(format!("space:{space}"));
    } else if let Some(crn) = event["logSourceCRN"].as_str() {
        if let Some(account) = crn.split(':').nth(6).and_then(|s| s.strip_prefix("a/")) {
            tenants.push(format!("account:{account}"));
        }
    }
    let id = cadf["id"].as_str().map_or_else(
        || crate::tail::identity::fnv1a(event.to_string().as_bytes()).to_string(),
        String::from,
    );
    let day = cadf["eventTime"]
        .as_str()
        .and_then(|t| time::parse(t).ok())
        .map_or_else(|| today.to_string(), time::Timestamp::date);
    Copies { tenants, id, day }
}

/// The store.
#[derive(Clone)]
pub struct EventStore {
    /// Service copies found already stored (same id), since start.
    duplicates: std::sync::Arc<std::sync::atomic::AtomicU64>,
    db: sled::Db,
    events: sled::Tree,
    ids: sled::Tree,
    idempotency: sled::Tree,
    writers: sled::Tree,
}

fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

impl EventStore {
    /// Opens (creating) the store in `dir`.
    pub fn open(dir: &Path) -> sled::Result<Self> {
        let db = sled::Config::new()
            .path(dir.join("receiver.sled"))
            .flush_every_ms(Some(500))
            .open()?;
        Ok(EventStore {
            duplicates: std::sync::Arc::default(),
            events: db.open_tree("events")?,
            ids: db.open_tree("ids")?,
            idempotency: db.open_tree("idempotency")?,
            writers: db.open_tree("writers")?,
            db,
        })
    }

    /// Stores a batch from `service` (project `project`).
    pub fn ingest(
        &self,
        service: &str,
        project: &str,
        idempotency_key: Option<&str>,
        events: &[Value],
        today: &str,
    ) -> sled::Result<Ingested> {
        let idem = idempotency_key.map(|k| key(&[service, k]));
        if let Some(k) = &idem {
            if let Some(previous) = self.idempotency.get(k)? {
                let mut answer: Ingested = serde_json::from_slice(&previous).unwrap_or(Ingested {
                    received: events.len(),
                    new: 0,
                    duplicates: 0,
                    replay: true,
                });
                answer.replay = true;
                return Ok(answer);
            }
        }
        let mut result = Ingested {
            received: events.len(),
            new: 0,
            duplicates: 0,
            replay: false,
        };
        for event in events {
            let c = copies(event, project, today);
            let bytes = serde_json::to_vec(event).expect("a JSON value serialises");
            for tenant in &c.tenants {
                let id_key = key(&[tenant, &c.id]);
                if self
                    .ids
                    .compare_and_swap(&id_key, None as Option<&[u8]>, Some(c.day.as_bytes()))?
                    .is_err()
                {
                    result.duplicates += 1;
                    if tenant.starts_with("project:") {
                        self.duplicates
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    continue;
                }
                let seq = self.db.generate_id()?.to_be_bytes();
                let mut k = key(&[tenant, &c.day, ""]);
                k.extend_from_slice(&seq);
                self.events.insert(k, bytes.as_slice())?;
                self.writers.insert(key(&[tenant, service]), &[])?;
                result.new += 1;
            }
        }
        if let Some(k) = idem {
            self.idempotency
                .insert(k, serde_json::to_vec(&result).expect("serialises"))?;
        }
        Ok(result)
    }

    /// Whether `service` wrote to `tenant` (and so may read it).
    pub fn may_read(&self, service: &str, tenant: &str) -> bool {
        self.writers
            .contains_key(key(&[tenant, service]))
            .unwrap_or(false)
    }

    /// The events of `tenant` in `[start, end]` that `service` wrote: a tenant (an
    /// account) holds the user copies of many services, and one service's token must not
    /// read or delete another's.
    fn days<'a>(
        &'a self,
        tenant: &str,
        start: &str,
        end: &str,
        service: &'a str,
    ) -> impl Iterator<Item = (String, sled::IVec, sled::IVec)> + 'a {
        let prefix = format!("{tenant}\0");
        let from = key(&[tenant, start, ""]);
        let to = key(&[tenant, end, "\u{ffff}"]);
        self.events
            .range(from..to)
            .filter_map(Result::ok)
            .filter_map(move |(k, v)| {
                let rest = k.strip_prefix(prefix.as_bytes())?;
                let day = String::from_utf8_lossy(rest.split(|b| *b == 0).next()?).into_owned();
                Some((day, k, v))
            })
            .filter(move |(_, _, v)| {
                serde_json::from_slice::<Value>(v)
                    .is_ok_and(|e| e["meta"]["serviceProviderName"].as_str() == Some(service))
            })
    }

    /// Events per day in `[start, end]` (dates `YYYY-MM-DD`) that `service` wrote.
    pub fn counts(
        &self,
        tenant: &str,
        start: &str,
        end: &str,
        service: &str,
    ) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = Vec::new();
        for (day, _, _) in self.days(tenant, start, end, service) {
            match out.last_mut() {
                Some((d, n)) if *d == day => *n += 1,
                _ => out.push((day, 1)),
            }
        }
        out
    }

    /// Writes the events of `[start, end]` that `service` wrote as NDJSON.
    pub fn download(
        &self,
        tenant: &str,
        start: &str,
        end: &str,
        service: &str,
        out: &mut impl Write,
    ) -> std::io::Result<u64> {
        let mut n = 0;
        for (_, _, v) in self.days(tenant, start, end, service) {
            out.write_all(&v)?;
            out.write_all(b"\n")?;
            n += 1;
        }
        Ok(n)
    }

    /// Deletes the events of `[start, end]` that `service` wrote; returns how many.
    pub fn delete(&self, tenant: &str, start: &str, end: &str, service: &str) -> sled::Result<u64> {
        let keys: Vec<sled::IVec> = self
            .days(tenant, start, end, service)
            .map(|(_, k, _)| k)
            .collect();
        for k in &keys {
            self.events.remove(k)?;
        }
        Ok(keys.len() as u64)
    }

    /// Deletes every event of a day before `cutoff` (`YYYY-MM-DD`), all tenants.
    pub fn expire_before(&self, cutoff: &str) -> sled::Result<u64> {
        let mut n = 0;
        for entry in self.events.iter() {
            let (k, _) = entry?;
            let day = k
                .split(|b| *b == 0)
                .nth(1)
                .map(|d| String::from_utf8_lossy(d).into_owned())
                .unwrap_or_default();
            if day.as_str() < cutoff {
                self.events.remove(&k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Distinct events received (their service copies' ids, all projects), even if later
    /// deleted.
    pub fn distinct_events(&self) -> usize {
        self.ids.scan_prefix("project:").count()
    }

    /// Service copies received again after they were stored, since start.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stored copies, all tenants (for tests and the demo).
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn service_and_user_copies() {
        let e = json!({"meta":{"serviceProviderName":"s","userAccountIds":["a1"]},"payload":{"id":"e1","eventTime":"2026-11-22T05:00:00.000+0000"}});
        assert_eq!(
            copies(&e, "p1", "2000-01-01"),
            Copies {
                tenants: vec!["project:p1".into(), "account:a1".into()],
                id: "e1".into(),
                day: "2026-11-22".into()
            }
        );
        let space =
            json!({"meta":{"userSpaceId":"sp"},"saveServiceCopy":false,"payload":{"id":"e2"}});
        assert_eq!(copies(&space, "p1", "2000-01-01").tenants, ["space:sp"]);
        let crn = json!({"meta":{},"logSourceCRN":"crn:v1:bluemix:public:s:us-south:a/acct9:i::","id":"e3"});
        assert_eq!(
            copies(&crn, "p1", "2000-01-01").tenants,
            ["project:p1", "account:acct9"]
        );
    }
}
