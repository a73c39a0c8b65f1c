//! `lifecycle`: lifecycle rules that move history to a Glacier class and
//! expire it.
//!
//! Rules written (each replaced on re-run, other rules in the bucket kept):
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

/// Rule ids owned by raidfs-sync.
pub const ARCHIVE_RULE: &str = "raidfs-sync-archive";
/// Expiry rule id.
pub const EXPIRE_RULE: &str = "raidfs-sync-expire";

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
            .id(ARCHIVE_RULE)
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
                .id(EXPIRE_RULE)
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

/// Replaces the raidfs-sync rules, keeping every other rule of the bucket.
pub async fn apply(bucket: &Bucket, plan: &LifecyclePlan) -> Result<Vec<LifecycleRule>> {
    let mut all: Vec<LifecycleRule> = current(bucket)
        .await?
        .into_iter()
        .filter(|r| !matches!(r.id(), Some(ARCHIVE_RULE | EXPIRE_RULE)))
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
    }
}
