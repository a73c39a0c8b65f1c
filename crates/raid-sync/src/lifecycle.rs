//! `lifecycle`: lifecycle rules that move history to a Glacier class and
//! expire it.
//!
//! Rules written, one pair per prefix (each replaced on re-run for its
//! prefix; other rules in the bucket, those of other prefixes included,
//! kept). Their ids name the prefix: `raidfs-sync-archive:PREFIX`,
//! `raidfs-sync-expire:PREFIX` (without `:PREFIX` for the empty prefix).
//!
//! * `raidfs-sync-archive`: noncurrent versions (overwritten or deleted
//!   files) move to the transition class N days after they stopped being
//!   current; with `current_too`, current objects move N days after upload.
//!   Since September 2024 S3 by default skips transitions of objects smaller
//!   than 128 KiB (their per-object overhead costs more than it saves), so
//!   the rule states `ObjectSizeGreaterThan` explicitly — set it to 0 to
//!   archive small objects too.
//! * `raidfs-sync-expire`: noncurrent versions are deleted M days after they
//!   stopped being current; delete markers left with no version are removed;
//!   multipart uploads abandoned for 7 days are aborted.

use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
    LifecycleExpiration, LifecycleRule, LifecycleRuleAndOperator, LifecycleRuleFilter,
    NoncurrentVersionExpiration, NoncurrentVersionTransition, Transition, TransitionStorageClass,
};

use crate::error::{Error, Result};
use crate::s3::Bucket;

/// Rule ids owned by raidfs-sync (the base: [`rule_id`] adds the prefix).
/// Versions before the prefix was added used these ids as they are, whatever
/// the prefix.
pub const ARCHIVE_RULE: &str = "raidfs-sync-archive";
/// Expiry rule id.
pub const EXPIRE_RULE: &str = "raidfs-sync-expire";

/// S3 takes rule ids of up to 255 characters.
const MAX_RULE_ID: usize = 255;

/// The id of raidfs-sync's rule `base` for `prefix`: `base:PREFIX`, or
/// `base` alone for the empty prefix; `base:~CRC` (CRC-32 of the prefix in
/// hex) when the prefix is too long for an id.
pub fn rule_id(base: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        return base.to_string();
    }
    let id = format!("{base}:{prefix}");
    if id.chars().count() <= MAX_RULE_ID {
        id
    } else {
        format!("{base}:~{:08x}", crc32fast::hash(prefix.as_bytes()))
    }
}

/// The prefix a rule's filter (or its legacy top-level prefix) names; `""`
/// for a rule over the whole bucket.
fn filter_prefix(r: &LifecycleRule) -> &str {
    #[allow(deprecated)]
    let legacy = r.prefix();
    r.filter()
        .and_then(|f| f.prefix().or_else(|| f.and().and_then(|a| a.prefix())))
        .or(legacy)
        .unwrap_or("")
}

/// Whether `r` is one of raidfs-sync's rules for `prefix`: its id names the
/// prefix, or it has an id of the versions before that and its filter names
/// the prefix.
pub fn is_own_rule(r: &LifecycleRule, prefix: &str) -> bool {
    match r.id() {
        // A plain id (the empty prefix's, and every prefix's before ids
        // named it) belongs to the prefix its filter names.
        Some(ARCHIVE_RULE | EXPIRE_RULE) => filter_prefix(r) == prefix,
        Some(id) => id == rule_id(ARCHIVE_RULE, prefix) || id == rule_id(EXPIRE_RULE, prefix),
        None => false,
    }
}

/// What the rules should say.
#[derive(Debug, Clone)]
pub struct LifecyclePlan {
    pub prefix: String,
    pub archive_after_days: Option<i32>,
    pub current_too: bool,
    pub transition_class: String,
    pub min_transition_size: i64,
    pub expire_noncurrent_after_days: Option<i32>,
}

/// Whole days in a duration (at least one).
pub fn days(d: std::time::Duration) -> Result<i32> {
    let days = d.as_secs() / 86_400;
    if days == 0 || !d.as_secs().is_multiple_of(86_400) {
        return Err(Error::Config(format!(
            "lifecycle periods are whole days (got {})",
            humantime::format_duration(d)
        )));
    }
    i32::try_from(days).map_err(|_| Error::Config("period too long".into()))
}

/// Builds the raidfs-sync rules.
pub fn rules(plan: &LifecyclePlan) -> Result<Vec<LifecycleRule>> {
    let build_err = |e| Error::s3("PutBucketLifecycleConfiguration", &plan.prefix, e);
    let mut out = Vec::new();
    if let Some(n) = plan.archive_after_days {
        let class = TransitionStorageClass::from(plan.transition_class.as_str());
        let filter = if plan.prefix.is_empty() {
            LifecycleRuleFilter::builder()
                .object_size_greater_than(plan.min_transition_size)
                .build()
        } else {
            LifecycleRuleFilter::builder()
                .and(
                    LifecycleRuleAndOperator::builder()
                        .prefix(&plan.prefix)
                        .object_size_greater_than(plan.min_transition_size)
                        .build(),
                )
                .build()
        };
        let mut r = LifecycleRule::builder()
            .id(rule_id(ARCHIVE_RULE, &plan.prefix))
            .status(ExpirationStatus::Enabled)
            .filter(filter)
            .noncurrent_version_transitions(
                NoncurrentVersionTransition::builder()
                    .noncurrent_days(n)
                    .storage_class(class.clone())
                    .build(),
            );
        if plan.current_too {
            r = r.transitions(Transition::builder().days(n).storage_class(class).build());
        }
        out.push(r.build().map_err(build_err)?);
    }
    if let Some(m) = plan.expire_noncurrent_after_days {
        out.push(
            LifecycleRule::builder()
                .id(rule_id(EXPIRE_RULE, &plan.prefix))
                .status(ExpirationStatus::Enabled)
                .filter(LifecycleRuleFilter::builder().prefix(&plan.prefix).build())
                .noncurrent_version_expiration(
                    NoncurrentVersionExpiration::builder()
                        .noncurrent_days(m)
                        .build(),
                )
                .expiration(
                    LifecycleExpiration::builder()
                        .expired_object_delete_marker(true)
                        .build(),
                )
                .abort_incomplete_multipart_upload(
                    AbortIncompleteMultipartUpload::builder()
                        .days_after_initiation(7)
                        .build(),
                )
                .build()
                .map_err(build_err)?,
        );
    }
    Ok(out)
}

/// Current rules of the bucket (empty if it has none).
pub async fn current(bucket: &Bucket) -> Result<Vec<LifecycleRule>> {
    bucket.count();
    match bucket
        .client
        .get_bucket_lifecycle_configuration()
        .bucket(&bucket.name)
        .send()
        .await
    {
        Ok(out) => Ok(out.rules().to_vec()),
        Err(e) => {
            use aws_sdk_s3::error::ProvideErrorMetadata;
            if e.code() == Some("NoSuchLifecycleConfiguration") {
                Ok(Vec::new())
            } else {
                Err(Error::s3(
                    "GetBucketLifecycleConfiguration",
                    &bucket.name,
                    e,
                ))
            }
        }
    }
}

/// Replaces the raidfs-sync rules of the plan's prefix, keeping every other
/// rule of the bucket (those of other prefixes included).
pub async fn apply(bucket: &Bucket, plan: &LifecyclePlan) -> Result<Vec<LifecycleRule>> {
    let mut all: Vec<LifecycleRule> = current(bucket)
        .await?
        .into_iter()
        .filter(|r| !is_own_rule(r, &plan.prefix))
        .collect();
    all.extend(rules(plan)?);
    let conf = BucketLifecycleConfiguration::builder()
        .set_rules(Some(all.clone()))
        .build()
        .map_err(|e| Error::s3("PutBucketLifecycleConfiguration", &bucket.name, e))?;
    bucket.count();
    bucket
        .client
        .put_bucket_lifecycle_configuration()
        .bucket(&bucket.name)
        .lifecycle_configuration(conf)
        .send()
        .await
        .map_err(|e| Error::s3("PutBucketLifecycleConfiguration", &bucket.name, e))?;
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_rule_states_the_minimum_size() {
        let plan = LifecyclePlan {
            prefix: "pi/".into(),
            archive_after_days: Some(30),
            current_too: false,
            transition_class: "GLACIER".into(),
            min_transition_size: 131_072,
            expire_noncurrent_after_days: Some(365),
        };
        let r = rules(&plan).unwrap();
        assert_eq!(r.len(), 2);
        let and = r[0].filter().unwrap().and().unwrap();
        assert_eq!(
            (and.prefix(), and.object_size_greater_than()),
            (Some("pi/"), Some(131_072))
        );
        assert!(
            r[0].transitions().is_empty(),
            "current objects stay unless asked"
        );
        assert_eq!(
            r[0].noncurrent_version_transitions()[0].noncurrent_days(),
            Some(30)
        );
        assert_eq!(
            r[1].noncurrent_version_expiration()
                .unwrap()
                .noncurrent_days(),
            Some(365)
        );
        assert!(days(std::time::Duration::from_secs(86_400 + 1)).is_err());
        assert_eq!(r[0].id(), Some("raidfs-sync-archive:pi/"));
        assert_eq!(r[1].id(), Some("raidfs-sync-expire:pi/"));
    }

    fn rule(id: &str, prefix: &str) -> LifecycleRule {
        LifecycleRule::builder()
            .id(id)
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix(prefix).build())
            .build()
            .unwrap()
    }

    #[test]
    fn own_rules_are_those_of_the_prefix() {
        assert_eq!(rule_id(ARCHIVE_RULE, ""), "raidfs-sync-archive");
        assert!(is_own_rule(&rule("raidfs-sync-expire:pi/", "pi/"), "pi/"));
        assert!(!is_own_rule(
            &rule("raidfs-sync-expire:laptop/", "laptop/"),
            "pi/"
        ));
        // Old ids: the filter tells the prefix.
        assert!(is_own_rule(&rule(EXPIRE_RULE, "pi/"), "pi/"));
        assert!(!is_own_rule(&rule(EXPIRE_RULE, "laptop/"), "pi/"));
        assert!(is_own_rule(&rule(ARCHIVE_RULE, ""), ""));
        // The empty prefix's id is the plain one: an old rule of another
        // prefix is still that prefix's.
        assert!(!is_own_rule(&rule(EXPIRE_RULE, "pi/"), ""));
        assert!(!is_own_rule(&rule("someone-else", "pi/"), "pi/"));
        let long = "p".repeat(300);
        let id = rule_id(EXPIRE_RULE, &long);
        assert!(id.len() <= MAX_RULE_ID && id.starts_with("raidfs-sync-expire:~"));
        assert!(is_own_rule(&rule(&id, &long), &long));
    }
}
