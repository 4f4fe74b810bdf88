"""Seeds a bucket on the local S3 stand-in (moto) with varied objects for the demo."""
import os
import sys

import boto3

bucket = sys.argv[1]
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
try:
    s3.create_bucket(Bucket=bucket)
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
put = lambda key, body, **kw: s3.put_object(Bucket=bucket, Key=key, Body=body, **kw)
put("reports/2026/q1.csv", b"id,amount\n1,10\n2,20\n", ContentType="text/csv", CacheControl="max-age=600")
put("reports/2026/q2 final+draft.csv", b"id,amount\n3,30\n", ContentType="text/csv")
put("images/logo.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", ContentType="image/svg+xml",
    Metadata={"author": "design-team", "review-status": "approved"})
put("unicode/日本語/ü.txt", "grüße".encode())
put("empty.txt", b"")
put("big/blob.bin", os.urandom(12 * 1024 * 1024))
put("folder-marker/", b"")
put("archive/cold.tar", b"frozen", StorageClass="GLACIER")
put("bad-name.", b"ends with a dot")
# A multipart upload: its ETag is not an MD5, so it is verified by size.
mp = s3.create_multipart_upload(Bucket=bucket, Key="big/multipart.bin")
parts = []
for n in (1, 2):
    r = s3.upload_part(Bucket=bucket, Key="big/multipart.bin", UploadId=mp["UploadId"], PartNumber=n,
                       Body=os.urandom(5 * 1024 * 1024))
    parts.append({"PartNumber": n, "ETag": r["ETag"]})
s3.complete_multipart_upload(Bucket=bucket, Key="big/multipart.bin", UploadId=mp["UploadId"],
                             MultipartUpload={"Parts": parts})
print(f"seeded s3://{bucket} with {len(s3.list_objects_v2(Bucket=bucket)['Contents'])} objects")
