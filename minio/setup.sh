#!/bin/sh
# One-shot MinIO set-up (the `minio-init` service): bucket, private policy,
# lifecycle rules and a least-privilege service user.  Safe to run again.
#
# Runs in quay.io/minio/mc (RELEASE.2025-08-13T08-35-41Z), a ubi-micro image: a shell and mc,
# but no sed, grep, awk or jq.  So this script uses shell built-ins and mc only
# (tests/test_deploy.py runs it with nothing else on PATH).
set -eu
: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${S3_BUCKET:?}" "${S3_ACCESS_KEY_ID:?}" "${S3_SECRET_ACCESS_KEY:?}"
RETENTION_DAYS="${RESULT_RETENTION_DAYS:-7}"
HERE="${0%/*}"

# Prints file $1 with every $2 replaced by $3 (the JSON templates next to this script).
render() {
  while IFS= read -r line || [ -n "$line" ]; do
    out=""
    while :; do
      case "$line" in
        *"$2"*) out="$out${line%%"$2"*}$3"; line="${line#*"$2"}" ;;
        *) break ;;
      esac
    done
    printf '%s%s\n' "$out" "$line"
  done < "$1"
}

mc alias set local "${MINIO_ENDPOINT:-http://minio:9000}" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "local/$S3_BUCKET"
# Private: no anonymous access at all; clients get presigned URLs.
mc anonymous set none "local/$S3_BUCKET"

# Originals left by a crash expire after a day; outputs after the retention.  `ilm rule import`
# replaces the bucket's whole lifecycle configuration, so a re-run applies a changed retention.
render "$HERE/lifecycle.json" RETENTION_DAYS "$RETENTION_DAYS" | mc ilm rule import "local/$S3_BUCKET"

# The service's own user, limited to the object operations it needs on its bucket.
# `policy create` overwrites a policy of the same name; `user add` sets the secret of an existing user.
policy="${TMPDIR:-/tmp}/resizer-policy.json"
render "$HERE/policy.json" BUCKET "$S3_BUCKET" > "$policy"
mc admin policy create local resizer-service "$policy"
mc admin user add local "$S3_ACCESS_KEY_ID" "$S3_SECRET_ACCESS_KEY"
# Attaching a policy the user already has is an error in this mc ("already in effect"): that one
# case means an earlier run did it; any other failure stops the set-up.
if ! out=$(mc admin policy attach local resizer-service --user "$S3_ACCESS_KEY_ID" 2>&1); then
  case "$out" in
    *"already in effect"*) ;;
    *) printf '%s\n' "$out" >&2; exit 1 ;;
  esac
fi
echo "minio-init: bucket $S3_BUCKET ready (private, lifecycle: outputs kept $RETENTION_DAYS days)"
