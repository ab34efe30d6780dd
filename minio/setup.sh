#!/bin/sh
# One-shot MinIO set-up (the `minio-init` service): bucket, private policy,
# lifecycle rules and a least-privilege service user.  Safe to run again.
set -eu
: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${S3_BUCKET:?}" "${S3_ACCESS_KEY_ID:?}" "${S3_SECRET_ACCESS_KEY:?}"
RETENTION_DAYS="${RESULT_RETENTION_DAYS:-7}"
HERE="$(dirname "$0")"

mc alias set local "${MINIO_ENDPOINT:-http://minio:9000}" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "local/$S3_BUCKET"
# Private: no anonymous access at all; clients get presigned URLs.
mc anonymous set none "local/$S3_BUCKET"

# Originals left by a crash expire after a day; outputs after the retention.
sed "s/RETENTION_DAYS/$RETENTION_DAYS/" "$HERE/lifecycle.json" > /tmp/lifecycle.json
mc ilm import "local/$S3_BUCKET" < /tmp/lifecycle.json

# The service's own user, limited to the object operations it needs on its bucket.
sed "s/BUCKET/$S3_BUCKET/g" "$HERE/policy.json" > /tmp/policy.json
mc admin policy create local resizer-service /tmp/policy.json 2>/dev/null || true
mc admin user add local "$S3_ACCESS_KEY_ID" "$S3_SECRET_ACCESS_KEY"
mc admin policy attach local resizer-service --user "$S3_ACCESS_KEY_ID" 2>/dev/null || true
echo "minio-init: bucket $S3_BUCKET ready (private, lifecycle: outputs kept $RETENTION_DAYS days)"
